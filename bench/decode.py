"""Decode time of a long clip, side by side in one run: decoding every frame; the
server's seek-sampling of N frames (uniform or at keyframes) with 1, 2 and all cores'
worth of decord readers; and vLLM's own OpenCV loader on the same clip.

Usage: python -m bench.decode [--seconds 60] [--height 720] [--fps 30] [--frames 32]
Writes decode.json and decode.md to --out. The clip is generated (H.264, moving content,
a keyframe every 2 s) and cached under runs/bench/."""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import av
import numpy as np

from bench.common.results import REPO, add_output_arguments, output_dir, write_report
from server.media import video
from server.settings import MediaSettings

SOURCES = ["server/media/video.py", "bench/decode.py"]


def make_clip(path: Path, seconds: int, height: int, fps: int) -> Path:
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    width = height * 16 // 9
    yy, xx = np.mgrid[:height, :width]
    base = ((xx // 40 + yy // 40) % 2 * 60 + 40).astype(np.uint8)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "veryfast", "g": str(fps * 2)})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(seconds * fps):
            frame = np.repeat(np.roll(base, i * 4, axis=1)[:, :, None], 3, axis=2)
            frame[:, :, 0] = (i * 3) % 256
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    add_output_arguments(parser)
    args = parser.parse_args()
    if args.small:
        args.seconds, args.height, args.repeats = 4, 360, 1
    import decord
    from vllm.multimodal.video import VideoBackend

    clip = make_clip(
        REPO / "runs/bench" / f"clip-{args.seconds}s-{args.height}p.mp4", args.seconds, args.height, args.fps
    )
    limits = MediaSettings(max_frames=args.frames, max_frame_pixels=448 * 448, max_video_seconds=3600)
    cores = os.cpu_count() or 1

    def server_path(sampling: str, readers: int):
        return lambda: video.decode(clip, limits, num_frames=args.frames, sampling=sampling, readers=readers)

    def every_frame_full_res():
        reader = decord.VideoReader(str(clip), ctx=decord.cpu(0))
        for i in range(len(reader)):
            reader[i]  # decode, drop: holding 1800 frames at 720p would need 5 GB

    def vllm_opencv_loader():
        # vLLM's own loader as `vllm serve` runs it: OpenCV, full resolution, from bytes.
        frames, _ = VideoBackend.load_bytes(clip.read_bytes(), num_frames=args.frames)
        assert len(frames) == args.frames

    arms = {"decode every frame (full resolution, 1 reader)": (every_frame_full_res, 1)}
    for readers in sorted({1, 2, cores}):
        arms[f"server: seek-sample {args.frames} uniform, {readers} reader(s)"] = (
            server_path("uniform", readers), args.repeats
        )  # fmt: skip
    for readers in sorted({1, cores}):
        arms[f"server: seek-sample {args.frames} at keyframes, {readers} reader(s)"] = (
            server_path("keyframes", readers), args.repeats
        )  # fmt: skip
    arms[f"vLLM's OpenCV loader: {args.frames} frames"] = (vllm_opencv_loader, args.repeats)

    full = "decode every frame (full resolution, 1 reader)"
    result = {
        "clip": {"seconds": args.seconds, "height": args.height, "fps": args.fps, "gop_frames": 2 * args.fps},
        "machine": {"cpus": cores},
        "rows": {},
    }
    for name, (fn, repeats) in arms.items():  # every arm in this one run
        times = timed(fn, repeats)
        result["rows"][name] = {"median_s": statistics.median(times), "runs_s": times}
    for row in result["rows"].values():
        row["of_full_decode"] = row["median_s"] / result["rows"][full]["median_s"]
    write_report(output_dir(args, "decode"), "decode", result, markdown, sources=SOURCES, indent=2)


def markdown(report: dict) -> str:
    lines = ["| decode | median s | of a full decode |", "|---|---|---|"]
    for name, row in report["rows"].items():
        lines.append(f"| {name} | {row['median_s']:.2f} | {row['of_full_decode']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
