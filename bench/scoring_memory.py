"""Peak extra memory of one ShaRP selection (scoring pass to layer K, mean prior, dedup)
at N = 16k video tokens, for a Qwen2.5-VL-7B-shaped decoder, measured at reduced widths
and scaled.

    python -m bench.scoring_memory [--tokens 16384] [--widths 256 512 768]
    python -m bench.scoring_memory --small   # CI: sharp at 8k tokens, widths 256 and 768

The product's own `DecoderScoringPass` and `select_tokens` run over the stand-in decoder
(bench/common/standin.py) at 7B's proportions. Memory is a fresh process's peak RSS
(Linux VmHWM, reset before the selection) above its RSS before it, so kernel scratch
counts too, with an allocator that returns what is freed (`LIVE_MEMORY`). At fixed N the
extra memory is linear in the width, so a least-squares line through the reduced widths
gives the 7B figure (hidden 3584). How to read it: bench/README.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys

import numpy as np
import torch

from bench.common.memory import LIVE_MEMORY, reset_peak_rss, rss_kib
from bench.common.results import add_output_arguments, output_dir, write_report
from bench.common.standin import HIDDEN_7B, QUERY_TOKENS, Decoder, video_layout

SOURCES = ["sharp_plugin/vllm/scoring_pass.py", "sharp_plugin/core", "bench/scoring_memory.py"]
METHODS = {
    "sharp": {"method": "sharp", "retention": 0.1, "debias": "mean", "segment_frames": 4},
    "fastv": {"method": "fastv", "retention": 0.1},  # plain causal mask, no prior, no dedup
}
GRID_SIDE = 16  # 16 x 16 tokens per temporal group


def measure(hidden: int, tokens: int, method: str) -> dict:
    """One selection in this process; its peak extra RSS in MiB."""
    from sharp_plugin.core import SharpSettings, select_tokens
    from sharp_plugin.vllm.scoring_pass import DecoderScoringPass

    torch.manual_seed(0)
    with torch.inference_mode():
        decoder = Decoder(hidden)
        groups = tokens // (GRID_SIDE * GRID_SIDE)
        settings = SharpSettings(**METHODS[method])
        # Warm-up at one group: allocator pools and the kernels' one-time buffers.
        warm = torch.randn(GRID_SIDE * GRID_SIDE, hidden, dtype=torch.bfloat16)
        select_tokens(settings, warm, DecoderScoringPass(decoder, 2, video_layout(1, GRID_SIDE)))
        visual = torch.randn(groups * GRID_SIDE * GRID_SIDE, hidden, dtype=torch.bfloat16)
        scorer = DecoderScoringPass(decoder, 2, video_layout(groups, GRID_SIDE))
        gc.collect()
        before = rss_kib("VmRSS")
        reset_peak_rss()
        selection = select_tokens(settings, visual, scorer)
        peak = rss_kib("VmHWM")
    assert selection.kept.numel() == round(0.1 * visual.shape[0])
    return {
        "method": method,
        "hidden": hidden,
        "tokens": visual.shape[0],
        "peak_extra_mib": (peak - before) / 1024,
    }


def markdown(report: dict) -> str:
    lines = [
        "# Peak extra memory of one selection",
        "",
        f"N = {report['tokens']}, scaled to Qwen2.5-VL-7B (hidden {HIDDEN_7B}) from widths "
        f"{report['widths']} (bench/scoring_memory.py).",
        "",
        "| method | MiB per hidden unit | bytes per token per hidden unit | 7B-shaped (MiB) |",
        "|---|---|---|---|",
    ]
    for method, row in report["scaled_to_hidden_3584"].items():
        lines.append(
            f"| {method} | {row['mib_per_hidden_unit']:.3f} | {row['bytes_per_token_per_hidden_unit']:.1f} "
            f"| {row['qwen25vl_7b_mib']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 512, 768])
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)  # child mode: hidden tokens method
    add_output_arguments(parser)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(int(args.one[0]), int(args.one[1]), args.one[2])))
        return
    methods = list(METHODS)
    if args.small:
        args.tokens, args.widths, methods = 8192, [256, 768], ["sharp"]
    rows = []
    for method in methods:
        for hidden in args.widths:
            # A fresh process per point: peak RSS is per process.
            command = [
                sys.executable,
                "-m",
                "bench.scoring_memory",
                "--one",
                str(hidden),
                str(args.tokens),
                method,
            ]
            env = {**os.environ, **LIVE_MEMORY}
            out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(rows[-1], file=sys.stderr)
    summary = {}
    for method in methods:
        points = [(r["hidden"], r["peak_extra_mib"]) for r in rows if r["method"] == method]
        slope, intercept = np.polyfit([p[0] for p in points], [p[1] for p in points], 1)
        summary[method] = {
            "mib_per_hidden_unit": slope,
            "bytes_per_token_per_hidden_unit": slope * 2**20 / (args.tokens + QUERY_TOKENS),
            "intercept_mib": intercept,
            "qwen25vl_7b_mib": slope * HIDDEN_7B + intercept,
        }
    report = {
        "what": "peak extra RSS of one select_tokens at K=2, r=0.1: sharp (segment mask, mean prior, dedup) "
        "and fastv (causal)",
        "tokens": args.tokens,
        "widths": args.widths,
        "methods": {m: METHODS[m] for m in methods},
        "rows": rows,
        "scaled_to_hidden_3584": summary,
    }
    write_report(output_dir(args, "scoring_memory"), "scoring_memory", report, markdown, sources=SOURCES)


if __name__ == "__main__":
    main()
