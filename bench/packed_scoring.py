"""The scoring passes of a step's videos run packed (`score_together`) against one pass
per video (what vLLM's one-video-per-call encoder path forced), side by side in one run.

Usage: python bench/packed_scoring.py [--hidden 512] [--small]
Stand-in decoder layers with vLLM's Qwen2 layer interface at 7B's proportions (see
bench/scoring_memory.py), reduced width; three layers (prune_layer 2). For each shape
(videos per step x tokens per video) it times both ways, median of `--repeats`, and
checks that each packed result equals its lone pass (the largest score difference is
reported). Writes bench/results/packed_scoring.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from scoring_memory import QUERY_TOKENS, Decoder  # noqa: E402

from sharp_plugin.core.masks import SegmentMask  # noqa: E402
from sharp_plugin.vllm.scoring_pass import DecoderScoringPass, ItemLayout, ScoringItem, score_together  # noqa: E402

PRUNE_LAYER, GRID_SIDE, SEGMENT_GROUPS = 2, 16, 4
SHAPES = [(1, 1024), (2, 1024), (4, 1024), (8, 256), (8, 512)]
SMALL_SHAPES = [(1, 256), (3, 256)]


def video(tokens: int, seed: int, hidden: int) -> tuple[ItemLayout, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    groups = tokens // (GRID_SIDE * GRID_SIDE)
    t, h, w = torch.meshgrid(
        torch.arange(groups), torch.arange(GRID_SIDE), torch.arange(GRID_SIDE), indexing="ij"
    )
    video_positions = torch.stack([t.flatten() * 2, h.flatten(), w.flatten()])  # [3, N]
    prefix = torch.randint(0, 1000, (12,), generator=generator)
    suffix = torch.randint(0, 1000, (QUERY_TOKENS,), generator=generator)
    after = int(video_positions.max()) + 1 + len(prefix)
    positions = torch.cat(
        [
            torch.arange(len(prefix)).expand(3, -1),
            video_positions + len(prefix),
            torch.arange(QUERY_TOKENS).expand(3, -1) + after,
        ],
        dim=1,
    )
    layout = ItemLayout(prefix, suffix, 1, positions, GRID_SIDE * GRID_SIDE)
    return layout, torch.randn(
        groups * GRID_SIDE * GRID_SIDE, hidden, generator=generator, dtype=torch.bfloat16
    )


def timed(run, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times), result


def measure(hidden: int, videos: int, tokens: int, repeats: int) -> dict:
    torch.manual_seed(0)
    decoder = Decoder(hidden)
    items = [ScoringItem(*video(tokens, seed, hidden), SegmentMask(SEGMENT_GROUPS)) for seed in range(videos)]
    with torch.inference_mode():
        timed(lambda: score_together(decoder, PRUNE_LAYER, items[:1]), 1)  # warm-up
        one_ms, alone = timed(
            lambda: [DecoderScoringPass(decoder, PRUNE_LAYER, i.layout)(i.visual, i.mask) for i in items],
            repeats,
        )
        packed_ms, packed = timed(lambda: score_together(decoder, PRUNE_LAYER, items), repeats)
    difference = max(float((a.scores - p.scores).abs().max()) for a, p in zip(alone, packed, strict=True))
    scale = max(float(a.scores.abs().max()) for a in alone)
    return {
        "hidden": hidden,
        "videos": videos,
        "tokens_per_video": tokens,
        "one_per_video_ms": one_ms,
        "packed_ms": packed_ms,
        "speedup": one_ms / packed_ms,
        "max_score_difference": difference,
        "max_score": scale,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--small", action="store_true", help="two tiny shapes, one repeat (the test)")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/packed_scoring.json")
    args = parser.parse_args()
    shapes = SMALL_SHAPES if args.small else SHAPES
    repeats = 1 if args.small else args.repeats
    hidden = 256 if args.small else args.hidden
    rows = [measure(hidden, videos, tokens, repeats) for videos, tokens in shapes]
    print(f"hidden {hidden}, {torch.get_num_threads()} threads")
    print("| videos x tokens | one pass per video (ms) | packed (ms) | ratio | max score difference |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['videos']} x {r['tokens_per_video']} | {r['one_per_video_ms']:.0f} | {r['packed_ms']:.0f} "
            f"| {r['speedup']:.2f}x | {r['max_score_difference']:.1e} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"threads": torch.get_num_threads(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
