"""Synthetic video helpers for tests: numpy frames with vLLM's metadata, and real
encoded files written with PyAV."""

from __future__ import annotations

from pathlib import Path

import numpy as np

VIDEO_PAD = "<|video_pad|>"


def noise_video(seed: int = 0, frames: int = 16, size: int = 224, fps: float = 4.0):
    """(frames THWC uint8, metadata) as vLLM's video input expects. 16 frames of 224^2
    give a Qwen2.5-VL grid of 8 x 16 x 16 -> N = 512 visual tokens."""
    rng = np.random.RandomState(seed)
    pixels = (rng.rand(frames, size, size, 3) * 255).astype(np.uint8)
    return pixels, video_metadata(frames, fps)


def slides_video(
    seed: int, groups: int, changes: set[int], *, group_frames: int = 2, size: int = 224, fps: float = 4.0
):
    """(frames, metadata) of a slideshow: slides of random-coloured 16-px blocks, a new one
    at each temporal group in `changes` (group 0 always opens one), every frame of a group
    the same. So the static groups are exactly those not in `changes` (and not 0), by the
    definition of skip_static (no token changed since the last group kept)."""
    rng = np.random.RandomState(seed)
    blocks = -(-size // 16)
    colours = rng.randint(0, 256, size=(len(changes | {0}), blocks, blocks, 3)).astype(np.uint8)
    slides = colours.repeat(16, axis=1).repeat(16, axis=2)[:, :size, :size]
    slide_of_group = np.cumsum([g == 0 or g in changes for g in range(groups)]) - 1
    pixels = np.repeat(slides[slide_of_group], group_frames, axis=0)
    return pixels, video_metadata(len(pixels), fps)


def video_metadata(frames: int, fps: float) -> dict:
    return {
        "total_num_frames": frames,
        "fps": fps,
        "duration": frames / fps,
        "video_backend": "opencv",
        "frames_indices": list(range(frames)),
        "do_sample_frames": False,
    }


def noise_image(seed: int = 0, size: int = 112):
    from PIL import Image

    rng = np.random.RandomState(seed)
    return Image.fromarray((rng.rand(size, size, 3) * 255).astype(np.uint8))


def chat_prompt(*parts: str) -> str:
    """Qwen chat prompt; parts are text, "<video>" or "<image>"."""
    body = "".join(
        "<|vision_start|><|video_pad|><|vision_end|>"
        if p == "<video>"
        else "<|vision_start|><|image_pad|><|vision_end|>"
        if p == "<image>"
        else p
        for p in parts
    )
    return f"<|im_start|>user\n{body}<|im_end|>\n<|im_start|>assistant\n"


def write_mp4(
    path: Path, pixels: np.ndarray, fps: int, lossless: bool = False, gop: int | None = None
) -> Path:
    """Encode THWC uint8 frames as H.264 mp4 with PyAV (`gop`: frames between keyframes)."""
    import av

    options = {"crf": "0"} if lossless else {}
    if gop is not None:
        options |= {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps, options=options)
        stream.width, stream.height = pixels.shape[2], pixels.shape[1]
        stream.pix_fmt = "yuv420p"
        for frame in pixels:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def frame_coded_video(frames: int, size: int = 112) -> np.ndarray:
    """Frame i is a flat grey of level 8 * i (i < 32): its index survives H.264 and
    resizing, so a test can read back which source frame a decoded frame came from."""
    levels = (np.arange(frames) * 8).clip(0, 255).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (frames, size, size, 3)).copy()


def frame_index_of(frame: np.ndarray) -> int:
    return int(round(float(frame.mean()) / 8))


def write_audio_only(path: Path, seconds: float = 1.0) -> Path:
    """An mp4 with an AAC audio stream and no video stream."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = int(16000 * seconds)
        tone = (np.sin(np.arange(samples) / 10) * 0.2).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
