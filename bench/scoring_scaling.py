"""Time and peak memory of the scoring pass against the video's length, block-causal
against segment-local masking (issue #14: the kept tokens must fit, not the video).

    python bench/scoring_scaling.py           # N = 4k .. 128k (block-causal to 32k), ~6 min
    python bench/scoring_scaling.py --small   # CI: local 8k and 32k, block-causal 4k and 16k

The product's own `DecoderScoringPass` over bench/scoring_memory.py's stand-in decoder
(vLLM's Qwen2 layer interface at 7B's proportions: head dim 128, 7 query heads per KV
head, MLP 5.3x wide) at a reduced width, to layer K = 2, with 64 query rows, 16 x 16
tokens per temporal group and 4 groups per segment. One fresh process per point: time
is the pass's wall time (after a warm-up at a small size; the fastest of --repeats),
memory the peak RSS of a separate process above its RSS before the pass. Writes JSON, a
markdown table and a PNG plot.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from report_files import write_report  # noqa: E402
from scoring_memory import LIVE_MEMORY, QUERY_TOKENS, Decoder, rss_kib  # noqa: E402

GRID_SIDE, SEGMENT_GROUPS, PRUNE_LAYER = 16, 4, 2
MASKS = ("block_causal", "local")


def measure(hidden: int, tokens: int, mask_kind: str, repeats: int = 1) -> dict:
    from sharp_plugin.core.masks import SegmentMask
    from sharp_plugin.vllm.scoring_pass import DecoderScoringPass, ItemLayout

    torch.manual_seed(0)
    torch.set_num_threads(1)  # one core: steadier timings on a shared 2-core machine
    mask = SegmentMask(SEGMENT_GROUPS, local=mask_kind == "local")
    with torch.inference_mode():
        decoder = Decoder(hidden)

        def layout(n: int) -> ItemLayout:
            groups = n // (GRID_SIDE * GRID_SIDE)
            t, h, w = torch.meshgrid(
                torch.arange(groups), torch.arange(GRID_SIDE), torch.arange(GRID_SIDE), indexing="ij"
            )
            video = torch.stack([t.flatten() * 2, h.flatten(), w.flatten()])
            start = int(video.max()) + 1
            positions = torch.cat([video, torch.arange(QUERY_TOKENS).expand(3, -1) + start], dim=1)
            suffix = torch.randint(0, 1000, (QUERY_TOKENS,))
            return ItemLayout(torch.zeros(0, dtype=torch.long), suffix, 1, positions, GRID_SIDE * GRID_SIDE)

        warm = GRID_SIDE * GRID_SIDE  # one group: smaller than any measured N
        DecoderScoringPass(decoder, PRUNE_LAYER, layout(warm))(
            torch.randn(warm, hidden, dtype=torch.bfloat16), mask
        )
        visual = torch.randn(tokens, hidden, dtype=torch.bfloat16)
        scorer = DecoderScoringPass(decoder, PRUNE_LAYER, layout(tokens))
        before = rss_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        times = []
        for _ in range(repeats):  # the fastest run: the least disturbed by the machine
            started = time.perf_counter()
            result = scorer(visual, mask)
            times.append(time.perf_counter() - started)
        seconds = min(times)
        peak = rss_kib("VmHWM")
    assert result.scores.shape == (tokens,)
    return {"mask": mask_kind, "hidden": hidden, "tokens": tokens, "seconds": seconds,
            "peak_extra_mib": (peak - before) / 1024}  # fmt: skip


# For the timing, the child keeps freed memory instead of returning it to the OS, so that
# a repeated pass reuses its pages: on this VM a fresh page fault costs a varying amount
# (memory reclaim runs beside it), which made single timings swing by 25%. Memory is
# measured in a second child, whose allocator returns what is freed (LIVE_MEMORY), so
# retained blocks do not inflate the peak.
KEEP_MEMORY = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}


def run_point(hidden: int, tokens: int, mask_kind: str, repeats: int) -> dict:
    def child(extra_env: dict, runs: int) -> dict:
        command = [sys.executable, __file__, "--one", str(hidden), str(tokens), mask_kind, str(runs)]
        env = {**os.environ, **extra_env}
        out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
        return json.loads(out.strip().splitlines()[-1])

    timed, plain = child(KEEP_MEMORY, repeats), child(LIVE_MEMORY, 1)
    return {**timed, "peak_extra_mib": plain["peak_extra_mib"]}


def markdown(report: dict) -> str:
    lines = [
        "# Scoring-pass time and peak memory against the video's length",
        "",
        f"Stand-in 7B-shaped decoder at hidden {report['hidden']}, K = {PRUNE_LAYER}, {QUERY_TOKENS} query "
        f"rows, {GRID_SIDE * GRID_SIDE} tokens per group, {SEGMENT_GROUPS} groups per segment; one process "
        "per point (bench/scoring_scaling.py).",
        "",
        "| mask | N | seconds | peak extra MiB | time / previous | memory / previous |",
        "|---|---|---|---|---|---|",
    ]
    for mask_kind in MASKS:
        previous = None
        for row in (r for r in report["rows"] if r["mask"] == mask_kind):
            ratios = ("", "")
            if previous is not None:
                ratios = (
                    f"{row['seconds'] / previous['seconds']:.2f}x ({row['tokens'] // previous['tokens']}x N)",
                    f"{row['peak_extra_mib'] / max(previous['peak_extra_mib'], 1e-9):.2f}x",
                )
            lines.append(
                f"| {mask_kind} | {row['tokens']} | {row['seconds']:.2f} | {row['peak_extra_mib']:.0f} | "
                f"{ratios[0]} | {ratios[1]} |"
            )
            previous = row
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for mask_kind in MASKS:
        rows = [r for r in report["rows"] if r["mask"] == mask_kind]
        tokens = [r["tokens"] for r in rows]
        left.plot(tokens, [r["seconds"] for r in rows], marker="o", label=mask_kind)
        right.plot(tokens, [r["peak_extra_mib"] for r in rows], marker="o", label=mask_kind)
    for ax, label in ((left, "seconds"), (right, "peak extra MiB")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("visual tokens N")
        ax.set_ylabel(label)
        ax.legend()
    fig.suptitle(f"Scoring pass (stand-in decoder, hidden {report['hidden']}): block-causal vs segment-local")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--tokens", type=int, nargs="+", default=[4096, 8192, 16384, 32768, 65536, 131072])
    parser.add_argument("--block-causal-tokens", type=int, nargs="+", default=[4096, 8192, 16384, 32768])
    parser.add_argument("--repeats", type=int, default=3, help="passes per point; the fastest is reported")
    # Best of 3 on one thread. Past 32k tokens the stand-in's row-wise work costs more per
    # row as its working set grows (this CPU's caches and page faults: even its GEMMs ran
    # 4.3x for 4x the rows from 32k to 128k, attention 5.0x), which is the machine's, not
    # the algorithm's; from 8k to 32k the pass measured 3.9x.
    parser.add_argument(
        "--small", action="store_true", help="CI: local at 8k and 32k, block-causal at 4k and 16k"
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--name", default="scoring_scaling")
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(int(args.one[0]), int(args.one[1]), args.one[2], int(args.one[3]))))
        return
    if args.small:
        args.tokens, args.block_causal_tokens = [8192, 32768], [4096, 16384]
        args.repeats, args.name = 3, args.name + "-small"
    rows = []
    for mask_kind in MASKS:
        for tokens in args.block_causal_tokens if mask_kind == "block_causal" else args.tokens:
            rows.append(run_point(args.hidden, tokens, mask_kind, args.repeats))
            print(rows[-1], flush=True)
    report = {
        "hidden": args.hidden,
        "rows": rows,
        "command": " ".join(["python bench/scoring_scaling.py", *sys.argv[1:]]),
    }
    write_report(args.out, args.name, report, markdown, plot, indent=2)


if __name__ == "__main__":
    main()
