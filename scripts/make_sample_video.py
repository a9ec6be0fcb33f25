"""Write a small H.264 sample video for demos: moving coloured shapes on a dark field.

Usage: python scripts/make_sample_video.py OUT.mp4 [--seconds 4] [--fps 8] [--size 224]
"""

from __future__ import annotations

import argparse

import av
import numpy as np


def render(seconds: float, fps: int, size: int) -> np.ndarray:
    frames = int(seconds * fps)
    yy, xx = np.mgrid[:size, :size]
    video = np.full((frames, size, size, 3), 24, dtype=np.uint8)
    for i in range(frames):
        x = int((i / max(frames - 1, 1)) * (size - 60)) + 30
        video[i][(xx - x) ** 2 + (yy - size // 3) ** 2 < 18**2] = (220, 40, 40)  # red circle, moving
        video[i][(abs(xx - size // 2) < 16) & (abs(yy - 2 * size // 3) < 16)] = (40, 200, 60)  # green square
    return video


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    with av.open(args.out, mode="w") as container:
        stream = container.add_stream("libx264", rate=args.fps)
        stream.width = stream.height = args.size
        stream.pix_fmt = "yuv420p"
        for frame in render(args.seconds, args.fps, args.size):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    print(args.out)


if __name__ == "__main__":
    main()
