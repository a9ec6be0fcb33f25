"""Video decoding with decord: probe, seek-sample only the frames needed, resize to the
model's pixel budget at decode time. Blocking: call from a worker thread."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import InvalidRequest, PayloadTooLarge, UnsupportedMedia
from ..settings import MediaSettings

# Qwen-VL frame sides are multiples of patch (14) x merge (2).
SIZE_FACTOR = 28

# `uniform`: evenly spaced frames (the model's training distribution). `keyframes`: each
# moved to its nearest keyframe, up to half a GOP away, for much cheaper decoding.
Sampling = Literal["uniform", "keyframes"]


class InvalidMedia(UnsupportedMedia):
    """Bytes that decord cannot decode as a video (corrupt, empty, unknown codec)."""


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    fps: float
    width: int
    height: int
    # Source indices of the keyframes, from the container's index ((0,) when it has none).
    keyframes: tuple[int, ...] = (0,)

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps


@dataclass(frozen=True)
class DecodedVideo:
    frames: np.ndarray  # [T, H, W, 3] uint8
    indices: list[int]  # source frame index of each decoded frame
    info: VideoInfo

    @property
    def estimated_tokens(self) -> int:
        """Unpruned visual tokens of these frames (what `decode` checked before decoding)."""
        return estimated_tokens(len(self.frames), self.frames.shape[2], self.frames.shape[1])

    def vllm_input(self) -> tuple[np.ndarray, dict]:
        """(frames, metadata) as vLLM's Qwen processors expect. The processor derives
        the sampled fps (so temporal positions) from len(indices) / total * fps."""
        return self.frames, {
            "total_num_frames": self.info.num_frames,
            "fps": self.info.fps,
            "duration": self.info.duration_s,
            "video_backend": "decord",
            "frames_indices": list(self.indices),
            "do_sample_frames": False,
        }


def _reader(path: Path, **kwargs):
    import decord

    try:
        return decord.VideoReader(str(path), ctx=decord.cpu(0), **kwargs)
    except Exception as exc:  # decord raises its own DECORDError and RuntimeError
        raise InvalidMedia(
            "The file could not be decoded as a video", param="video", code="invalid_video"
        ) from exc


def probe(path: Path) -> VideoInfo:
    """Open the container and read the stream's frame count, rate and size."""
    if path.stat().st_size == 0:
        raise InvalidMedia("The video is empty", param="video", code="invalid_video")
    reader = _reader(path, num_threads=1)
    num_frames = len(reader)
    fps = float(reader.get_avg_fps())
    if num_frames <= 0 or not math.isfinite(fps) or fps <= 0:
        raise InvalidMedia("The video has no decodable frames", param="video", code="invalid_video")
    height, width = reader[0].shape[:2]
    try:
        keyframes = tuple(sorted(int(i) for i in reader.get_key_indices())) or (0,)
    except Exception:  # decord's own errors: a container without an index is one long GOP
        keyframes = (0,)
    return VideoInfo(
        num_frames=num_frames, fps=fps, width=int(width), height=int(height), keyframes=keyframes
    )


def check_limits(info: VideoInfo, limits: MediaSettings) -> None:
    if info.duration_s > limits.max_video_seconds:
        raise PayloadTooLarge(
            f"Video is {info.duration_s:.1f} s long; the limit is {limits.max_video_seconds:.0f} s",
            param="video",
            code="video_too_long",
        )
    if info.width * info.height > limits.max_source_pixels:
        raise PayloadTooLarge(
            f"Video resolution {info.width}x{info.height} is over the limit of "
            f"{limits.max_source_pixels} pixels",
            param="video",
            code="resolution_too_large",
        )


def sample_indices(
    info: VideoInfo, limits: MediaSettings, num_frames: int | None = None, fps: float | None = None
) -> list[int]:
    """Source frames to decode: `num_frames` evenly spaced (the centre of each slice), or
    one every 1/fps seconds. Sampling by fps is capped at the frame limit by spreading
    the same number of frames evenly; an explicit num_frames over the limit is refused."""
    if num_frames is not None and fps is not None:
        raise InvalidRequest(
            "Give media_io_kwargs.video.num_frames or fps, not both", param="media_io_kwargs"
        )
    if num_frames is None and fps is None:
        num_frames = limits.default_num_frames
        fps = None if num_frames is not None else limits.default_fps
    if num_frames is not None:
        if not 1 <= num_frames <= limits.max_frames:
            raise InvalidRequest(
                f"num_frames must be between 1 and {limits.max_frames}, got {num_frames}",
                param="media_io_kwargs.video.num_frames",
            )
        count = min(num_frames, info.num_frames)
    else:
        if not fps > 0:
            raise InvalidRequest("fps must be positive", param="media_io_kwargs.video.fps")
        count = max(1, min(limits.max_frames, math.floor(info.duration_s * fps), info.num_frames))
    return [
        min(info.num_frames - 1, math.floor((2 * i + 1) * info.num_frames / (2 * count)))
        for i in range(count)
    ]


def estimated_tokens(num_frames: int, width: int, height: int) -> int:
    """Unpruned visual tokens of `num_frames` frames of width x height in the Qwen-VL
    geometry: 2 frames per temporal group, one token per 28 x 28 pixels."""
    return math.ceil(num_frames / 2) * (width // SIZE_FACTOR) * (height // SIZE_FACTOR)


def target_size(width: int, height: int, max_pixels: int, factor: int = SIZE_FACTOR) -> tuple[int, int]:
    """Largest (w, h), multiples of `factor`, with w * h <= max_pixels and the source's
    aspect ratio (never upscaled past the source)."""
    scale = min(1.0, math.sqrt(max_pixels / (width * height)))
    w = max(factor, math.floor(width * scale / factor) * factor)
    h = max(factor, math.floor(height * scale / factor) * factor)
    return w, h


def frame_pixels(limits: MediaSettings, num_frames: int) -> int:
    """Each frame's pixel budget: max_frame_pixels, shrunk so that the video's frames
    together stay under max_video_pixels (target_size still gives at least 28 x 28)."""
    if limits.max_video_pixels is None:
        return limits.max_frame_pixels
    return min(limits.max_frame_pixels, limits.max_video_pixels // max(num_frames, 1))


def decode(
    path: Path,
    limits: MediaSettings,
    num_frames: int | None = None,
    fps: float | None = None,
    threads: int = 1,
    sampling: Sampling = "uniform",
    readers: int = 1,
    max_tokens: int | None = None,
) -> DecodedVideo:
    """Seek-sample the frames a request needs, resized at decode time.

    `readers` > 1 splits the frames at keyframes into that many runs and decodes each
    with its own decord reader on its own thread: runs start at different GOPs, so no
    frame is decoded twice, and decord decodes with the GIL released. `sampling:
    keyframes` moves each sampled frame to its nearest keyframe where that keyframe is
    not taken (a keyframe decodes alone; any other frame costs its GOP up to it).
    `max_tokens`: the unpruned visual tokens this video may add to its request, checked
    before any frame is decoded."""
    info = probe(path)
    check_limits(info, limits)
    indices = sample_indices(info, limits, num_frames, fps)
    width, height = target_size(info.width, info.height, frame_pixels(limits, len(indices)))
    tokens = estimated_tokens(len(indices), width, height)
    if max_tokens is not None and tokens > max_tokens:
        raise PayloadTooLarge(
            f"The video would be {tokens} unpruned visual tokens ({len(indices)} frames of "
            f"{width}x{height}); the request may have {max_tokens} more (media.max_video_tokens): "
            "send fewer frames or a lower fps",
            param="media_io_kwargs.video",
            code="too_many_video_tokens",
        )
    keyframes = list(info.keyframes)
    if sampling == "keyframes":
        indices = snap_to_keyframes(indices, keyframes, info.num_frames)
    runs = split_at_keyframes(indices, keyframes, readers)
    if len(runs) == 1:
        frames = _read(path, width, height, indices, threads)
    else:
        with ThreadPoolExecutor(len(runs), thread_name_prefix="decode-run") as pool:
            frames = np.concatenate(list(pool.map(lambda run: _read(path, width, height, run, 1), runs)))
    return DecodedVideo(frames=frames, indices=indices, info=info)


def _read(path: Path, width: int, height: int, indices: list[int], threads: int) -> np.ndarray:
    reader = _reader(path, width=width, height=height, num_threads=threads)
    try:
        return reader.get_batch(indices).asnumpy()
    except Exception as exc:
        raise InvalidMedia("The video could not be decoded", param="video", code="invalid_video") from exc


def snap_to_keyframes(indices: list[int], keyframes: list[int], num_frames: int) -> list[int]:
    """Each sampled index moved to the nearest keyframe that lies strictly between the
    frame chosen before it and the next sampled index; where there is none, it stays.
    The result is sorted, distinct, within the video and as long as `indices`."""
    keys = np.asarray(keyframes, dtype=np.int64)
    out: list[int] = []
    for i, index in enumerate(indices):
        lower = out[-1] if out else -1
        upper = indices[i + 1] if i + 1 < len(indices) else num_frames
        window = keys[(keys > lower) & (keys < upper)]
        out.append(int(window[np.argmin(np.abs(window - index))]) if window.size else index)
    return out


def split_at_keyframes(indices: list[int], keyframes: list[int], runs: int) -> list[list[int]]:
    """Sorted `indices` cut into at most `runs` consecutive runs of about equal length,
    each cut placed where the next frame starts a new GOP (so no two runs decode the
    same GOP). Fewer runs when the frames span fewer GOPs."""
    if runs <= 1 or len(indices) <= 1 or not keyframes:
        return [list(indices)]
    keys = np.asarray(keyframes)
    gop = np.searchsorted(keys, np.asarray(indices), side="right")  # GOP number of each frame
    boundaries = [i for i in range(1, len(indices)) if gop[i] != gop[i - 1]]
    cuts: list[int] = []
    for k in range(1, runs):
        target = round(k * len(indices) / runs)
        best = min(boundaries, key=lambda b: abs(b - target), default=None)
        if best is not None and best not in cuts:
            cuts.append(best)
    cuts.sort()
    edges = [0, *cuts, len(indices)]
    return [list(indices[a:b]) for a, b in zip(edges, edges[1:], strict=False) if b > a]
