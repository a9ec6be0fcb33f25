"""Write a demo clip for the default model: a held-out proxy clip as H.264 mp4.

Usage: python scripts/make_sample_video.py OUT.mp4 [--seed N] [--task single] [--split standard]

The clip is one the model never trained on (proxy_videoqa.held_out). Each of its 16
frames is shown for 0.5 s, encoded at 8 fps, so the server's 2 fps sampling has real
work to do and lands on the frames the model was trained on. Prints the question and
the expected answer as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from proxy_videoqa.clips import SPLITS, TASKS, make_clip  # noqa: E402
from proxy_videoqa.geometry import FPS  # noqa: E402
from proxy_videoqa.held_out import HELD_OUT_SEED  # noqa: E402

ENCODED_FPS = 8


def write_mp4(path: str, frames: np.ndarray, fps: int) -> None:
    with av.open(path, mode="w") as container:
        # Near-lossless: the colours are the answers.
        stream = container.add_stream("libx264", rate=fps, options={"crf": "8"})
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED + 3)
    parser.add_argument("--task", default="single", choices=TASKS)
    parser.add_argument("--split", default="standard", choices=SPLITS)
    args = parser.parse_args()
    clip = make_clip(args.seed, args.task, args.split)
    write_mp4(args.out, np.repeat(clip.frames, int(ENCODED_FPS / FPS), axis=0), ENCODED_FPS)
    print(json.dumps({"video": args.out, "question": clip.question, "answer": clip.answer}))


if __name__ == "__main__":
    main()
