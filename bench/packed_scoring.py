"""The scoring passes of a step's videos packed into one (`score_together`) against one
pass per video, side by side in one run.

    python -m bench.packed_scoring [--hidden 512] [--rounds 5]
    python -m bench.packed_scoring --small   # CI: two tiny shapes, two rounds

The stand-in decoder (bench/common/standin.py) at a reduced width, three layers
(prune_layer 2). For each shape (videos per step x tokens per video) the two ways run in
alternation, round after round; each round's ratio gives the speed-up's median and 95%
interval. Each packed result is checked against its lone pass (the largest score
difference is reported).
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.common.results import add_output_arguments, output_dir, write_report
from bench.common.standin import Decoder, video_layout
from bench.common.stats import ratio
from sharp_plugin.core.masks import SegmentMask
from sharp_plugin.vllm.scoring_pass import DecoderScoringPass, ScoringItem, score_together

SOURCES = ["sharp_plugin/vllm/scoring_pass.py", "sharp_plugin/core", "bench/packed_scoring.py"]
PRUNE_LAYER, GRID_SIDE, SEGMENT_GROUPS = 2, 16, 4
SHAPES = [(1, 1024), (2, 1024), (4, 1024), (8, 256), (8, 512)]
SMALL_SHAPES = [(1, 256), (3, 256)]


def measure(hidden: int, videos: int, tokens: int, rounds: int) -> dict:
    torch.manual_seed(0)
    decoder = Decoder(hidden)
    groups = tokens // (GRID_SIDE * GRID_SIDE)
    items = []
    for seed in range(videos):
        generator = torch.Generator().manual_seed(seed)
        layout = video_layout(groups, GRID_SIDE, prefix=12, generator=generator)
        visual = torch.randn(tokens, hidden, generator=generator, dtype=torch.bfloat16)
        items.append(ScoringItem(layout, visual, SegmentMask(SEGMENT_GROUPS)))

    def alone():
        return [DecoderScoringPass(decoder, PRUNE_LAYER, i.layout)(i.visual, i.mask) for i in items]

    def packed():
        return score_together(decoder, PRUNE_LAYER, items)

    times: dict[str, list[float]] = {"alone": [], "packed": []}
    results = {}
    with torch.inference_mode():
        score_together(decoder, PRUNE_LAYER, items[:1])  # warm-up
        for _ in range(rounds):
            for name, run in (("alone", alone), ("packed", packed)):
                started = time.perf_counter()
                results[name] = run()
                times[name].append((time.perf_counter() - started) * 1e3)
    pairs = zip(results["alone"], results["packed"], strict=True)
    difference = max(float((a.scores - p.scores).abs().max()) for a, p in pairs)
    return {
        "hidden": hidden,
        "videos": videos,
        "tokens_per_video": tokens,
        "one_per_video_ms": times["alone"],
        "packed_ms": times["packed"],
        "speedup": ratio(times["alone"], times["packed"]),
        "max_score_difference": difference,
        "max_score": max(float(a.scores.abs().max()) for a in results["alone"]),
    }


def markdown(report: dict) -> str:
    lines = [
        "# Packed scoring passes against one pass per video",
        "",
        f"Stand-in decoder, hidden {report['hidden']}, {report['threads']} threads, {report['rounds']} "
        "interleaved rounds; speed-up: median [95% interval].",
        "",
        "| videos x tokens | speed-up of packing | max score difference |",
        "|---|---|---|",
    ]
    for r in report["rows"]:
        s = r["speedup"]
        lines.append(
            f"| {r['videos']} x {r['tokens_per_video']} | {s['median']:.2f}x [{s['ci95'][0]:.2f}, "
            f"{s['ci95'][1]:.2f}] | {r['max_score_difference']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    add_output_arguments(parser)
    args = parser.parse_args()
    shapes = SMALL_SHAPES if args.small else SHAPES
    rounds, hidden = (2, 256) if args.small else (args.rounds, args.hidden)
    rows = [measure(hidden, videos, tokens, rounds) for videos, tokens in shapes]
    report = {"hidden": hidden, "threads": torch.get_num_threads(), "rounds": rounds, "rows": rows}
    write_report(output_dir(args, "packed_scoring"), "packed_scoring", report, markdown, sources=SOURCES)


if __name__ == "__main__":
    main()
