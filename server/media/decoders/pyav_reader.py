"""PyAV (FFmpeg): decodes forward from one sampled frame to the next, seeking only when the
next lies past a keyframe, and on the way drops the frames that no other frame references
(`skip_frame: NONREF`); only the frames asked for are converted, at the target size. For
uniform sampling that is about a fifth of a full decode where decord's per-frame seeks cost
half (bench/results/decode.md). CPU only."""

from __future__ import annotations

import bisect
from pathlib import Path

import av
import numpy as np

from .base import VideoInfo, invalid

# Bicubic, as decord's resize (and Qwen's processors) use: the closest to decord's frames of
# swscale's filters (mean absolute difference 1.7 of 255 on a sharp checkerboard, 3.6 bilinear).
RESIZE = "BICUBIC"


class PyAVDecoder:
    def probe(self, path: Path) -> VideoInfo:
        """Demux (no decoding) every packet: the frame count, each frame's timestamp and
        the keyframes come from the packets themselves, not from the header."""
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise invalid("The file has no video stream")
                stream = container.streams.video[0]
                pts, keyframe_pts = [], []
                for packet in container.demux(stream):
                    if packet.pts is None:  # the flush packet at the end of the stream
                        continue
                    pts.append(packet.pts)
                    if packet.is_keyframe:
                        keyframe_pts.append(packet.pts)
                rate = stream.average_rate or stream.guessed_rate
                width, height = stream.codec_context.width, stream.codec_context.height
        except av.FFmpegError as exc:
            raise invalid() from exc
        pts.sort()
        keyframes = tuple(sorted(bisect.bisect_left(pts, p) for p in keyframe_pts)) or (0,)
        return VideoInfo(
            num_frames=len(pts),
            fps=float(rate) if rate else 0.0,
            width=int(width),
            height=int(height),
            keyframes=keyframes,
            frame_pts=tuple(pts),
        )

    def read(
        self, path: Path, info: VideoInfo, indices: list[int], width: int, height: int, threads: int
    ) -> np.ndarray:
        try:
            frames = _forward_decode(path, info, indices, width, height, threads)
        except av.FFmpegError as exc:
            raise invalid("The video could not be decoded") from exc
        missing = [i for i in indices if i not in frames]
        if missing:  # e.g. a truncated file whose index promises frames its data lacks
            raise invalid(f"The video could not be decoded: frame {missing[0]} is missing")
        return np.stack([frames[i] for i in indices])


def _forward_decode(
    path: Path, info: VideoInfo, indices: list[int], width: int, height: int, threads: int
) -> dict[int, np.ndarray]:
    wanted = sorted(set(indices))
    index_of = {p: i for i, p in enumerate(info.frame_pts)}
    keys = np.asarray(info.keyframes)
    out: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        # Slice threads only: frame threads would each hold their own copy of skip_frame,
        # which is set per packet below.
        stream.thread_type = "SLICE"
        stream.codec_context.thread_count = threads
        context = stream.codec_context
        fed = None  # the highest frame index fed to the decoder since the last seek
        pos = 0
        while pos < len(wanted):
            target = wanted[pos]
            key = int(keys[keys <= target].max(initial=0))
            if fed is None or key > fed:  # a keyframe past what was fed: seek to it
                container.seek(info.frame_pts[key], stream=stream, backward=True, any_frame=False)
                context.flush_buffers()
                # Counted as fed even if the seek landed earlier (a wrong keyframe index), so
                # that every seek moves strictly forward: no loop, only a longer decode.
                fed = key
            pending = set(wanted[pos:])
            for packet in container.demux(stream):
                if packet.pts is None:  # end of stream: drain the decoder
                    decoded = context.decode(None)
                else:
                    index = index_of.get(packet.pts, -1)
                    fed = max(fed, index)
                    context.skip_frame = "DEFAULT" if index in pending else "NONREF"
                    decoded = context.decode(packet)
                for frame in decoded:
                    index = index_of.get(frame.pts, -1)
                    if index in pending and index not in out:
                        out[index] = frame.to_ndarray(
                            format="rgb24", width=width, height=height, interpolation=RESIZE
                        )
                while pos < len(wanted) and wanted[pos] in out:
                    pos += 1
                if pos >= len(wanted):
                    break
                upcoming = wanted[pos]
                if ((keys > fed) & (keys <= upcoming)).any():  # past the next keyframe: seek
                    break
            else:
                break  # the stream ended before every wanted frame came out
    return out
