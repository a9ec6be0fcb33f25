"""Accuracy against retention on the proxy video-QA task, through the real vLLM engine.

    python -m bench.quality                 # full run (bench/README.md gives its cost)
    python -m bench.quality --small         # CI: the machinery on a few clips

A PROXY, NOT THE PAPER'S BENCHMARK: a 2 M-parameter Qwen2.5-VL trained here on synthetic
clips (proxy_videoqa) where each answer hangs on one video token of 128. It shows
whether a method keeps the token that matters; it says nothing about real videos.

Per method and retention: accuracy per task and split, and the needle recall (share of
the answer's tokens that the selection kept, from the per-request report). Methods: the
presets in configs/pruning-presets.yaml (none, sharp, its three ablations, fastv,
uniform, random) at each retention, an oracle that keeps the needle first (the
ceiling), and vLLM's own EVS at the matched rate (stock architecture, engine-wide
`video_pruning_rate`, one engine per rate). At retention 1.0 every method keeps every
token, so one unpruned pass stands for all of them.

Writes JSON (with every clip's outcome per cell, for paired comparisons), a markdown
table and a PNG plot (accuracy against retention, one line per method) to --out.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from bench.common.engines import bench_llm, evs_llm, frames_input, shutdown, tag, video_reports
from bench.common.results import REPO, add_output_arguments, output_dir, write_report
from bench.common.stats import binomial_se, paired_difference
from proxy_videoqa.batches import chat_prompt
from proxy_videoqa.clips import SPLITS, TASKS, Clip
from proxy_videoqa.geometry import FPS
from proxy_videoqa.held_out import held_out_clips

ROOT = REPO
DEFAULT_MODEL = ROOT / "models" / "sharp-proxy-qwen25vl"
SOURCES = ["sharp_plugin", "models/sharp-proxy-qwen25vl", "proxy_videoqa", "bench/quality.py"]
PRESETS = yaml.safe_load((ROOT / "configs" / "pruning-presets.yaml").read_text())
SHARP_METHODS = [
    "sharp", "sharp-local", "sharp-segments", "sharp-question-prior", "sharp-no-masking", "sharp-no-debias",
    "sharp-no-dedup", "fastv", "uniform", "random", "oracle",
]  # fmt: skip
ALL_METHODS = ["none", *SHARP_METHODS, "evs"]
RETENTIONS = [1.0, 0.5, 0.25, 0.1, 0.05]
# Task/split cells the shipped model does not solve (< 0.9 unpruned): reported separately
# and left out of the `shipped` aggregate (models/sharp-proxy-qwen25vl/README.md).
UNSOLVED = ("query/small",)
CHUNK = 64  # requests per generate call (the progress bar moves per chunk)


def settings_for(method: str, retention: float, clip: Clip) -> dict:
    if method == "oracle":
        return {"method": "oracle", "retention": retention, "oracle_tokens": clip.needle_tokens}
    return {**PRESETS[method], "retention": retention}


def make_engine(model: Path, dtype: str, *, evs_retention: float | None = None):
    common = {
        "dtype": dtype,
        "max_model_len": 1024,
        "max_num_seqs": 32,
        "limit_mm_per_prompt": {"video": 1, "image": 0},
    }
    if evs_retention is None:
        return bench_llm(model, **common)
    return evs_llm(model, evs_retention, **common)


def run_pass(llm, clips: list[Clip], settings, bar) -> list[dict]:
    """Answers (and, on the ShaRP engine, kept indices) for every clip under one setting.

    `settings(clip)` gives the request's `sharp` object, or None for a stock engine.
    """
    from vllm import SamplingParams

    tokenizer = llm.get_tokenizer()
    params = SamplingParams(max_tokens=1, temperature=0.0)
    results = []
    for start in range(0, len(clips), CHUNK):
        chunk = clips[start : start + CHUNK]
        requests, report_ids = [], []
        for clip in chunk:
            request = {
                "prompt": chat_prompt(tokenizer, clip.question),
                "multi_modal_data": {"video": frames_input(clip.frames, FPS)},
            }
            report_ids.append(tag(request, settings(clip)))
            requests.append(request)
        outputs = llm.generate(requests, params, use_tqdm=False)
        reports = video_reports(llm, report_ids)
        kept = [videos[0].selection.kept_indices if videos else None for videos in reports]
        for clip, output, kept_indices in zip(chunk, outputs, kept, strict=True):
            answer = tokenizer.decode(output.outputs[0].token_ids).strip()
            needle = set(clip.needle_tokens)
            recall = None if kept_indices is None else len(needle & set(kept_indices)) / len(needle)
            results.append(
                {
                    "correct": answer == clip.answer,
                    "needle_recall": recall,
                    "prompt_tokens": len(output.prompt_token_ids),
                }
            )
        bar.update(len(chunk))
    return results


def summarise(clips: list[Clip], results: list[dict]) -> dict:
    """Per cell (all, task, task/split): n, accuracy, needle recall, prompt tokens; and
    every clip's outcome in clip order (`outcomes`), for paired comparisons."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for clip, result in zip(clips, results, strict=True):
        for key in ("all", clip.task, f"{clip.task}/{clip.split}"):
            groups[key].append(result)
    summary = {}
    for key, rows in groups.items():
        recalls = [r["needle_recall"] for r in rows if r["needle_recall"] is not None]
        summary[key] = {
            "n": len(rows),
            "accuracy": round(float(np.mean([r["correct"] for r in rows])), 4),
            "needle_recall": round(float(np.mean(recalls)), 4) if recalls else None,
            "prompt_tokens": round(float(np.mean([r["prompt_tokens"] for r in rows])), 1),
        }
    summary["outcomes"] = [int(r["correct"]) for r in results]
    return summary


def markdown(report: dict) -> str:
    retentions = report["retentions"]
    lines = [
        "# Proxy video-QA accuracy against retention",
        "",
        "A proxy, not the paper's benchmark: a 2 M-parameter Qwen2.5-VL trained on synthetic clips "
        "(proxy_videoqa), one needle token of 128 per answer. "
        f"{report['clips']} held-out clips ({report['per_split']} per task and split), "
        f"model `{report['model']}`, dtype {report['dtype']}, through vLLM {report['provenance']['vllm']}. "
        f"`shipped` is every task/split cell but the unsolved ones ({', '.join(report['unsolved'])}: "
        "the model is below 0.9 on them unpruned), which are reported separately.",
        "",
    ]
    keys = ["shipped", "all", *TASKS, *(f"{t}/{s}" for t in TASKS for s in SPLITS)]
    for key in keys:
        unpruned = report["results"]["none"]["1.0"][key]
        n = unpruned["n"]
        unsolved = key in report["unsolved"]
        note = " — UNSOLVED by the model, reported separately" if unsolved else ""
        # The standard error of one accuracy near the unpruned one; comparing two methods
        # on the same clips takes the paired difference (the table after these).
        se = binomial_se(unpruned["accuracy"], n)
        lines += [f"## {key} (n = {n}, standard error of the unpruned accuracy {se:.4f}){note}", ""]
        lines.append("| method | " + " | ".join(f"r={r}" for r in retentions) + " |")
        lines.append("|---|" + "---|" * len(retentions))
        for method, by_retention in report["results"].items():
            cells = []
            for r in retentions:
                cell = by_retention.get(str(r), {}).get(key)
                if cell is None:
                    cells.append("")
                    continue
                recall = cell["needle_recall"]
                cells.append(f"{cell['accuracy']:.3f}" + (f" ({recall:.2f})" if recall is not None else ""))
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += paired_lines(report)
    lines += [
        "Cells: accuracy (needle recall: share of the answer's token kept, from the per-request "
        "report; EVS gives no report). Chance is 0.2 (five colours).",
        "",
        "## Mean prompt tokens (the budget each method really got)",
        "",
        "vLLM's EVS always keeps the first temporal group whole (16 of 128 tokens here), so below "
        "r = 0.125 it keeps more tokens than the others.",
        "",
        "| method | " + " | ".join(f"r={r}" for r in retentions) + " |",
        "|---|" + "---|" * len(retentions),
    ]
    for method, by_retention in report["results"].items():
        cells = [
            str(by_retention[str(r)]["all"]["prompt_tokens"]) if str(r) in by_retention else ""
            for r in retentions
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def paired_lines(report: dict) -> list[str]:
    """Each method against ShaRP at the same retention, on the shipped clips: the mean of
    the per-clip differences in correctness, with its standard error (the same clips
    answered twice, so the comparison is paired, not two accuracies side by side)."""
    if "clip_cells" not in report:
        return []
    shipped = [cell not in report["unsolved"] for cell in report["clip_cells"]]
    retentions = [r for r in report["retentions"] if r < 1.0]
    lines = [
        "## Against ShaRP at the same retention (shipped clips, paired: mean difference ± its SE)",
        "",
        "| method | " + " | ".join(f"r={r}" for r in retentions) + " |",
        "|---|" + "---|" * len(retentions),
    ]
    for method, by_retention in report["results"].items():
        if method == "sharp":
            continue
        cells = []
        for r in retentions:
            mine, sharp = by_retention.get(str(r)), report["results"]["sharp"].get(str(r))
            if mine is None or sharp is None:
                cells.append("")
                continue
            pick = [o for o, keep in zip(mine["outcomes"], shipped, strict=True) if keep]
            base = [o for o, keep in zip(sharp["outcomes"], shipped, strict=True) if keep]
            diff = paired_difference(pick, base)
            cells.append(f"{diff['difference']:+.3f} ± {diff['se']:.3f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, grid = plt.subplots(len(TASKS), 1 + len(SPLITS), figsize=(21, 8), sharey=True, squeeze=False)
    for task, axes in zip(TASKS, grid, strict=True):
        for ax, key in zip(axes, [task, *(f"{task}/{s}" for s in SPLITS)], strict=True):
            for method, by_retention in report["results"].items():
                if method == "none":
                    continue
                points = sorted((float(r), c[key]["accuracy"]) for r, c in by_retention.items() if key in c)
                style = "--" if method in ("oracle", "evs") else "-"
                ax.plot(*zip(*points, strict=True), style, marker="o", ms=3, label=method)
            ax.axhline(report["results"]["none"]["1.0"][key]["accuracy"], color="k", lw=0.8, ls=":")
            ax.axhline(0.2, color="grey", lw=0.6)
            ax.set_xscale("log")
            ax.set_xticks(report["retentions"], [str(r) for r in report["retentions"]])
            ax.set_title(key + (" (unsolved)" if key in report["unsolved"] else ""))
        axes[0].set_ylabel("accuracy (proxy task)")
    for ax in grid[-1]:
        ax.set_xlabel("retention")
    grid[0][-1].legend(fontsize=7, loc="lower right")
    fig.suptitle(
        "Proxy video-QA (synthetic, not the paper's benchmark): accuracy against retention; "
        "dotted: unpruned, grey: chance"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--per-split", type=int, default=125, help="held-out clips per task and split")
    parser.add_argument("--retentions", type=float, nargs="+", default=RETENTIONS)
    parser.add_argument("--methods", nargs="+", default=ALL_METHODS, choices=ALL_METHODS)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--name", default="quality", help="output file stem")
    add_output_arguments(parser)  # --small: 2 clips per task and split, retentions 1.0 and 0.25
    parser.add_argument("--from-json", type=Path, help="only re-render the table and plot of a saved run")
    args = parser.parse_args()
    if args.from_json:
        report = json.loads(args.from_json.read_text())
        # The saved run's provenance, not this re-rendering's (write_report keeps it).
        report.setdefault("provenance", None)
        write_outputs(report, args.from_json.parent, args.from_json.stem)
        return
    if args.small:
        args.per_split, args.retentions = 2, [1.0, 0.25]

    clips = list(held_out_clips(args.per_split))
    pruned = [r for r in args.retentions if r < 1.0]
    plan = [("none", 1.0)]  # always: the reference line of every table
    plan += [(m, r) for m in args.methods if m not in ("none", "evs") for r in pruned]
    evs_plan = [("evs", r) for r in pruned] if "evs" in args.methods else []
    bar = tqdm(total=len(clips) * (len(plan) + len(evs_plan)), unit="clip", desc="quality")
    results: dict[str, dict[str, dict]] = defaultdict(dict)
    seconds: dict[str, float] = {}
    llm = make_engine(args.model, args.dtype)
    for method, retention in plan:
        bar.set_postfix_str(f"{method} r={retention}")
        started = time.perf_counter()
        rows = run_pass(llm, clips, lambda clip, m=method, r=retention: settings_for(m, r, clip), bar)
        seconds[f"{method}@{retention}"] = round(time.perf_counter() - started, 1)
        results[method][str(retention)] = summarise(clips, rows)
    shutdown(llm)
    for _, retention in evs_plan:
        bar.set_postfix_str(f"evs r={retention}")
        llm = make_engine(args.model, args.dtype, evs_retention=retention)
        started = time.perf_counter()
        rows = run_pass(llm, clips, lambda clip: None, bar)
        seconds[f"evs@{retention}"] = round(time.perf_counter() - started, 1)
        results["evs"][str(retention)] = summarise(clips, rows)
        shutdown(llm)
    bar.close()
    # At retention 1.0 every method keeps every token: the unpruned pass stands for all.
    for method in results:
        results[method].setdefault("1.0", results["none"]["1.0"])
    report = {
        "note": "proxy task (synthetic clips, 2M-param model trained here), not the paper's benchmark",
        "model": str(args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model),
        "dtype": args.dtype,
        "per_split": args.per_split,
        "clips": len(clips),
        # Each clip's cell, in the order of every cell's `outcomes`.
        "clip_cells": [f"{clip.task}/{clip.split}" for clip in clips],
        "retentions": sorted(args.retentions, reverse=True),
        "presets": {m: PRESETS[m] for m in SHARP_METHODS if m in PRESETS},
        "unsolved": list(UNSOLVED),
        "results": dict(results),
        "pass_seconds": seconds,
    }
    write_outputs(report, output_dir(args, "quality"), args.name)


def add_shipped(report: dict) -> None:
    """The `shipped` cell: every task/split cell but the unsolved ones, weighted by clips."""
    cells = [f"{t}/{s}" for t in TASKS for s in SPLITS if f"{t}/{s}" not in report["unsolved"]]
    for by_retention in report["results"].values():
        for summary in by_retention.values():
            parts = [summary[c] for c in cells if c in summary]
            n = sum(p["n"] for p in parts)
            recalls = [(p["needle_recall"], p["n"]) for p in parts if p["needle_recall"] is not None]

            def mean(pairs, total):
                return round(sum(v * w for v, w in pairs) / total, 4)

            summary["shipped"] = {
                "n": n,
                "accuracy": mean([(p["accuracy"], p["n"]) for p in parts], n),
                "needle_recall": mean(recalls, sum(w for _, w in recalls)) if recalls else None,
                "prompt_tokens": round(mean([(p["prompt_tokens"], p["n"]) for p in parts], n), 1),
            }


def write_outputs(report: dict, out: Path, name: str) -> None:
    add_shipped(report)
    write_report(out, name, report, markdown, plot, sources=SOURCES)


if __name__ == "__main__":
    main()
