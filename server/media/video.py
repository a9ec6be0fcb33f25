"""Video decoding: probe, sample only the frames needed, resize to the model's pixel
budget at decode time, with the backend `media.decoder` names (decoders/). Blocking: call
from a worker thread."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import InvalidRequest, PayloadTooLarge
from ..settings import MediaSettings
from .decoders import DecodeDevice, Decoder, DecoderName, InvalidMedia, VideoInfo, get_decoder

__all__ = ["DecodedVideo", "InvalidMedia", "VideoInfo", "decode", "probe", "sample_indices"]

# Qwen-VL frame sides are multiples of patch (14) x merge (2).
SIZE_FACTOR = 28

# `uniform`: evenly spaced frames (the model's training distribution). `keyframes`: each
# moved to its nearest keyframe, up to half a GOP away, for much cheaper decoding.
Sampling = Literal["uniform", "keyframes"]


@dataclass(frozen=True)
class DecodedVideo:
    frames: np.ndarray  # [T, H, W, 3] uint8
    indices: list[int]  # source frame index of each decoded frame
    info: VideoInfo
    decoder: str = "pyav"  # the backend that decoded it

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
            "video_backend": self.decoder,  # a label: vLLM's Qwen processors do not read it
            "frames_indices": list(self.indices),
            "do_sample_frames": False,
        }


def probe(path: Path, decoder: Decoder | None = None) -> VideoInfo:
    """Open the container and read the stream's frame count, rate, size and keyframes."""
    if path.stat().st_size == 0:
        raise InvalidMedia("The video is empty", param="video", code="invalid_video")
    info = (decoder or get_decoder()).probe(path)
    if info.num_frames <= 0 or not math.isfinite(info.fps) or info.fps <= 0:
        raise InvalidMedia("The video has no decodable frames", param="video", code="invalid_video")
    return info


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
    decoder: DecoderName = "pyav",
    device: DecodeDevice = "cpu",
) -> DecodedVideo:
    """Sample the frames a request needs, resized at decode time, with `decoder`.

    `readers` > 1 splits the frames at keyframes into that many runs and decodes each
    with its own reader on its own thread: runs start at different GOPs, so no frame is
    decoded twice, and every backend decodes with the GIL released. `sampling:
    keyframes` moves each sampled frame to its nearest keyframe where that keyframe is
    not taken (a keyframe decodes alone; any other frame costs its GOP up to it).
    `max_tokens`: the unpruned visual tokens this video may add to its request, checked
    before any frame is decoded."""
    backend = get_decoder(decoder, device)
    info = probe(path, backend)
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
        frames = backend.read(path, info, indices, width, height, threads)
    else:
        with ThreadPoolExecutor(len(runs), thread_name_prefix="decode-run") as pool:
            parts = pool.map(lambda run: backend.read(path, info, run, width, height, 1), runs)
            frames = np.concatenate(list(parts))
    return DecodedVideo(frames=frames, indices=indices, info=info, decoder=decoder)


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


def check_decoder(limits: MediaSettings) -> None:
    """Decode a tiny clip, made here, with the configured backend and device: at start-up,
    so that a decoder that cannot load (torchcodec without CUDA libraries, decord without
    CUDA on `decode_device: cuda`) stops the server with its reason instead of failing
    every video request."""
    import tempfile

    import av

    with tempfile.TemporaryDirectory(prefix="sharp-decoder-check-") as scratch:
        path = Path(scratch) / "check.mp4"
        with av.open(str(path), mode="w") as container:
            stream = container.add_stream("libx264", rate=4)
            stream.width = stream.height = 56
            stream.pix_fmt = "yuv420p"
            for level in range(4):
                frame = np.full((56, 56, 3), 60 * level, dtype=np.uint8)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        try:
            decoded = decode(path, limits, num_frames=2, decoder=limits.decoder, device=limits.decode_device)
        except Exception as exc:
            raise RuntimeError(
                f"media.decoder {limits.decoder} on {limits.decode_device} cannot decode a test clip: "
                f"{type(exc).__name__}: {exc.__cause__ or exc}"
            ) from exc
        if decoded.frames.shape[0] != 2:
            count = decoded.frames.shape[0]
            raise RuntimeError(f"media.decoder {limits.decoder} returned {count} of 2 frames")
