"""Decode time of a long clip: seek-sampling N frames (what the server does) against
decoding every frame, side by side in one run.

Usage: python bench/decode.py [--seconds 60] [--height 720] [--fps 30] [--frames 32]
Writes bench/results/decode.json. The clip is generated (H.264, moving content) and cached
under runs/bench/."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from server import video  # noqa: E402
from server.settings import MediaSettings  # noqa: E402


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
    args = parser.parse_args()
    import decord

    clip = make_clip(
        REPO / "runs/bench" / f"clip-{args.seconds}s-{args.height}p.mp4", args.seconds, args.height, args.fps
    )
    limits = MediaSettings(max_frames=args.frames, max_frame_pixels=448 * 448, max_video_seconds=3600)

    def sampled():
        return video.decode(clip, limits, num_frames=args.frames)

    def every_frame_full_res():
        reader = decord.VideoReader(str(clip), ctx=decord.cpu(0))
        for i in range(len(reader)):
            reader[i]  # decode, drop: holding 1800 frames at 720p would need 5 GB

    rows = {
        f"server path: seek-sample {args.frames} frames, resized to 448^2 budget": timed(
            sampled, args.repeats
        ),
        "decode every frame (full resolution)": timed(every_frame_full_res, 1),
    }
    result = {"clip": {"seconds": args.seconds, "height": args.height, "fps": args.fps}, "rows": {}}
    print(f"{'decode':70} {'median s':>9}")
    for name, times in rows.items():
        median = statistics.median(times)
        result["rows"][name] = {"median_s": median, "runs_s": times}
        print(f"{name:70} {median:>9.2f}")
    names = list(rows)
    speedup = result["rows"][names[1]]["median_s"] / result["rows"][names[0]]["median_s"]
    result["speedup"] = speedup
    print(f"seek-sampling is {speedup:.1f}x faster")
    out = REPO / "bench/results/decode.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
