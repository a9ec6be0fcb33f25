"""A needle in a long video (V-NIAH style), through the real vLLM engine: needle recall,
answer accuracy, and the vision tower's and the selection's time and peak memory, against
the video's length, for sharp, fastv, uniform, vLLM's EVS and an oracle.

    python -m bench.long_video            # 1 to 64 clips (128 to 8,192 video tokens), 50 needles
    python -m bench.long_video --small    # CI: 1 and 8 clips, 2 needles

A PROXY, NOT A REAL LONG-VIDEO BENCHMARK. The model is the 2 M-parameter Qwen2.5-VL
trained here on 8-second synthetic clips (proxy_videoqa); it never saw a video longer
than one clip. A long video is L clips played one after another at the clips' own 2 fps:
L - 1 haystack clips (shapes of every kind but the needle's, so the haystack is full of
plausible distractors) and one held-out `query` clip, the needle, at a known depth
(start, middle, end). The question is the needle clip's own ("What colour is the
triangle?"), answerable from one video token of the 128 L.

The engine has a 1,024-token context and every method keeps the same share of the video
(--retention, 0.1), so from 16 clips on the unpruned video is longer than the context
and only the kept tokens are served. `none` (unpruned) runs where it fits. Arms:
- the presets `sharp` (its mask is `auto`: block-causal below 16k tokens), `sharp-local`
  (the segment-local mask), `sharp-block-causal` (block-causal at every length), `fastv`
  and `uniform`, on the ShaRP engine;
- `oracle`: keeps the needle's token first, then uniform (the ceiling of any selection);
- `evs`: vLLM's EVS on the stock architecture at the matched rate (engine-wide
  `video_pruning_rate`; it gives no report, so no recall).

Per request: needle recall (the per-request report's kept indices against the needle's
token), the one-word answer, prompt tokens, and stages measured by hooks: the frontend's
processor (wall time, and the bytes of tensors it hands to the engine: the pixels), the
vision tower (`_process_video_input`) and, for ShaRP, the selection (`run_selection`:
scoring pass, black prior, dedup, top-k). Peak memory of a stage is the worker's peak
RSS during it above its RSS before it, with the allocator's free pages returned to the
OS first and the peak reset (Linux VmHWM); on a GPU, `torch.cuda.max_memory_allocated`.
Each (length, needle) pair is a distinct video, so no cache serves the tower (the vision
cache is off) or the question.

Every arm answers the same needles, so each arm's accuracy is compared with the
oracle's as a paired difference over the needles of a length, with its standard error
(bench/common/stats.py); the per-needle outcomes are the JSON's `rows`.

Writes JSON, a markdown table and a PNG plot (recall and accuracy, and the stages' time
and memory, against length) to --out.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bench.common.engines import (
    ProcessorProbe,
    bench_llm,
    evs_llm,
    frames_input,
    install_stage_probes,
    pop_stages,
    shutdown,
    stage_totals,
    tag,
    video_reports,
)
from bench.common.results import REPO, add_output_arguments, output_dir, write_report
from bench.common.stats import binomial_se, paired_difference
from bench.quality import DEFAULT_MODEL, PRESETS
from proxy_videoqa.batches import chat_prompt
from proxy_videoqa.clips import Clip, make_clip
from proxy_videoqa.geometry import FPS, VIDEO_TOKENS
from proxy_videoqa.held_out import HELD_OUT_SEED

ROOT = REPO
SOURCES = ["sharp_plugin", "models/sharp-proxy-qwen25vl", "proxy_videoqa", "bench/long_video.py"]
CONTEXT = 1024
LENGTHS = (1, 4, 16, 64)  # clips: 128 to 8,192 video tokens (8x the context)
DEPTHS = (0.0, 0.5, 1.0)  # where the needle clip sits, as a share of the video
SHARP_ARMS = ("sharp", "sharp-local", "sharp-block-causal", "fastv", "uniform", "oracle")
ALL_ARMS = ("none", *SHARP_ARMS, "evs")
HAYSTACK_SEED = 2 * HELD_OUT_SEED  # a seed range neither training nor the held-out set draws from


# ---- the videos -------------------------------------------------------------------------
class Haystack:
    """Clips without a given shape, drawn in a fixed order from their own seed range."""

    def __init__(self):
        self._by_shape: dict[str, list[Clip]] = defaultdict(list)
        self._next_seed = HAYSTACK_SEED

    def clips(self, without_shape: str, count: int, offset: int) -> list[Clip]:
        pool = self._by_shape[without_shape]
        while len(pool) < offset + count:
            seed = self._next_seed
            self._next_seed += 1
            for task in ("single", "query"):
                clip = make_clip(seed, task, "standard")
                shapes = {obj.shape for obj in clip.objects}
                for shape in ("circle", "square", "triangle", "cross"):
                    if shape not in shapes:
                        self._by_shape[shape].append(clip)
        return pool[offset : offset + count]


def needle_shape(clip: Clip) -> str:
    return next(obj.shape for obj in clip.objects if obj.is_target)


class Case:
    """One long video: the needle clip at `position` among `length` clips."""

    def __init__(self, needle: Clip, length: int, depth: float, haystack: Haystack, index: int):
        self.needle, self.length, self.depth, self.index = needle, length, depth, index
        self.position = round(depth * (length - 1))
        others = haystack.clips(needle_shape(needle), length - 1, offset=index * 7)
        self.clips = [*others[: self.position], needle, *others[self.position :]]
        self.needle_tokens = [self.position * VIDEO_TOKENS + t for t in needle.needle_tokens]

    @property
    def video_tokens(self) -> int:
        return self.length * VIDEO_TOKENS

    def video_input(self):
        # The frames are joined when the case runs: held for every case at once they would
        # come to about 1.5 GB for the full run.
        return frames_input(np.concatenate([clip.frames for clip in self.clips]), FPS)


def needles(count: int) -> Iterator[Clip]:
    """Held-out `query` clips of the standard split: a shape among distractors."""
    for i in range(count):
        yield make_clip(HELD_OUT_SEED + i, "query", "standard")


def cases(lengths, needles_per_length: int, depths) -> list[Case]:
    haystack = Haystack()
    out = []
    for length in lengths:
        for index, needle in enumerate(needles(needles_per_length)):
            depth = depths[index % len(depths)] if length > 1 else 0.0
            out.append(Case(needle, length, depth, haystack, index))
    return out


# ---- hooks in the worker and the frontend -------------------------------------------------
# ---- the engines ------------------------------------------------------------------------
def make_engine(model: Path, *, evs_retention: float | None = None):
    common = {
        "max_model_len": CONTEXT, "max_num_seqs": 1, "limit_mm_per_prompt": {"video": 1, "image": 0},
        "enable_prefix_caching": False,
    }  # fmt: skip
    if evs_retention is None:
        # The vision cache off: every arm's tower runs (and is timed) on every request.
        llm = bench_llm(model, sharp_config={"sharp_vision_cache_mb": 0}, **common)
    else:
        llm = evs_llm(model, evs_retention, **common)
    llm.collective_rpc(install_stage_probes)
    return llm


def settings_for(arm: str, retention: float, case: Case) -> dict | None:
    if arm == "evs":
        return None
    if arm == "none":
        return {"method": "none"}
    if arm == "oracle":
        return {"method": "oracle", "retention": retention, "oracle_tokens": case.needle_tokens}
    if arm == "sharp-block-causal":
        return {**PRESETS["sharp"], "segment_mask": "block_causal", "retention": retention}
    return {**PRESETS[arm], "retention": retention}


def fits(arm: str, case: Case, retention: float) -> bool:
    """Whether the arm's prompt fits the context (the text is under 32 tokens)."""
    from sharp_plugin.core import kept_count

    kept = case.video_tokens if arm == "none" else kept_count(retention, case.video_tokens)
    return kept + 32 <= CONTEXT


def run_case(llm, processor: ProcessorProbe, arm: str, retention: float, case: Case) -> dict:
    from vllm import SamplingParams

    tokenizer = llm.get_tokenizer()
    request = {
        "prompt": chat_prompt(tokenizer, case.needle.question),
        "multi_modal_data": {"video": case.video_input()},
    }
    report_id = tag(request, settings_for(arm, retention, case))
    llm.collective_rpc(pop_stages)
    processor.pop()
    started = time.perf_counter()
    (output,) = llm.generate([request], SamplingParams(max_tokens=1, temperature=0.0), use_tqdm=False)
    seconds = time.perf_counter() - started
    (stages,) = llm.collective_rpc(pop_stages)
    processor_ms, handed_over = processor.pop()
    answer = tokenizer.decode(output.outputs[0].token_ids).strip()
    row = {
        "arm": arm,
        "length": case.length,
        "needle": case.index,
        "depth": case.depth,
        "video_tokens": case.video_tokens,
        "correct": answer == case.needle.answer,
        "prompt_tokens": len(output.prompt_token_ids),
        "request_s": seconds,
        "processor_ms": processor_ms,
        "handed_over_mib": handed_over / 2**20,
        "needle_recall": None,
    }
    totals = stage_totals(stages)
    for stage in ("tower", "selection"):
        row[f"{stage}_ms"] = totals[stage]["ms"] if stage in totals else None
        row[f"{stage}_peak_mib"] = totals[stage]["peak_mib"] if stage in totals else None
    if report_id is not None:
        ((report,),) = video_reports(llm, [report_id])
        kept = set(report.selection.kept_indices)
        row["needle_recall"] = len(kept.intersection(case.needle_tokens)) / len(case.needle_tokens)
        row["kept"] = report.video_tokens_kept
        row["fallback"] = report.fallback
    return row


# ---- the report ---------------------------------------------------------------------------
def summarise(rows: list[dict]) -> dict:
    cells: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        cells[row["arm"]][str(row["length"])].append(row)

    def median(values):
        values = [v for v in values if v is not None]
        return round(statistics.median(values), 1) if values else None

    out: dict[str, dict[str, dict]] = {}
    for arm, by_length in cells.items():
        out[arm] = {}
        for length, group in by_length.items():
            recalls = [r["needle_recall"] for r in group if r["needle_recall"] is not None]
            out[arm][length] = {
                "n": len(group),
                "video_tokens": group[0]["video_tokens"],
                "accuracy": round(float(np.mean([r["correct"] for r in group])), 3),
                "needle_recall": round(float(np.mean(recalls)), 3) if recalls else None,
                "prompt_tokens": round(float(np.mean([r["prompt_tokens"] for r in group])), 1),
                "request_s": round(statistics.median(r["request_s"] for r in group), 2),
                "processor_ms": median(r["processor_ms"] for r in group),
                "handed_over_mib": round(max(r["handed_over_mib"] for r in group), 1),
                "tower_ms": median(r["tower_ms"] for r in group),
                "tower_peak_mib": median(r["tower_peak_mib"] for r in group),
                "selection_ms": median(r["selection_ms"] for r in group),
                "selection_peak_mib": median(r["selection_peak_mib"] for r in group),
                "fallbacks": sum(1 for r in group if r.get("fallback")),
            }
            accuracy = out[arm][length]["accuracy"]
            out[arm][length]["accuracy_se"] = round(binomial_se(accuracy, len(group)), 3)
    # Against the oracle on the same needles: the gap the selection leaves.
    for arm, by_length in out.items():
        for length, cell in by_length.items():
            oracle = {r["needle"]: r["correct"] for r in cells.get("oracle", {}).get(length, [])}
            mine = {r["needle"]: r["correct"] for r in cells[arm][length]}
            shared = sorted(set(oracle) & set(mine))
            if arm != "oracle" and len(shared) > 1:
                cell["vs_oracle"] = paired_difference([mine[n] for n in shared], [oracle[n] for n in shared])
    return out


def markdown(report: dict) -> str:
    lengths = [str(n) for n in report["lengths"]]
    results = report["results"]
    lines = [
        "# A needle in a long video (proxy, V-NIAH style)",
        "",
        "A proxy, not a real long-video benchmark: the 2 M-parameter model trained on 8 s synthetic "
        "clips, shown L clips in a row (L - 1 haystack clips with every shape but the needle's, and "
        f"the needle clip at the start, middle or end). Context {report['context']} tokens; every "
        f"method keeps {report['retention']} of the video; `none` runs only where the unpruned video "
        f"fits. {report['needles']} needles per length, model `{report['model']}`, vLLM "
        f"{report['provenance']['vllm']}, {report['provenance']['machine']}.",
        "",
        "## Accuracy ± its SE (needle recall)",
        "",
        "| arm | " + " | ".join(f"{n} clips ({int(n) * VIDEO_TOKENS} tokens)" for n in lengths) + " |",
        "|---|" + "---|" * len(lengths),
    ]

    def accuracy(arm: str, cell: dict | None) -> str:
        if cell is None:
            return "does not fit" if arm == "none" else ""
        recall = cell["needle_recall"]
        text = f"{cell['accuracy']:.2f} ± {cell['accuracy_se']:.2f}"
        return text + (f" ({recall:.2f})" if recall is not None else "")

    def against_the_oracle(arm: str, cell: dict | None) -> str:
        paired = (cell or {}).get("vs_oracle")
        return f"{paired['difference']:+.2f} ± {paired['se']:.2f}" if paired else ""

    def rows(cell_text, skip: tuple[str, ...] = ()) -> list[str]:
        """One row per arm, one cell per length."""
        return [
            f"| {arm} | " + " | ".join(cell_text(arm, by_length.get(n)) for n in lengths) + " |"
            for arm, by_length in results.items()
            if arm not in skip
        ]

    lines += rows(accuracy)
    lines += [
        "",
        "Chance is 0.2 (five colours). Recall: the share of the needle's token the selection kept, "
        "from the per-request report (EVS gives none).",
        "",
        "## Against the oracle (paired over the same needles: accuracy difference ± its SE)",
        "",
        "| arm | " + " | ".join(f"{n} clips" for n in lengths) + " |",
        "|---|" + "---|" * len(lengths),
    ]
    lines += rows(against_the_oracle, skip=("oracle",))
    lines += [
        "",
        "## Time and memory per stage (medians)",
        "",
        "Tower: the vision tower (EVS: with its pruning). Selection: ShaRP's scoring pass, black "
        "prior, dedup and top-k. Peak: the worker's peak RSS during the stage above its RSS before "
        "it. Handed over: the processor's tensors sent from the frontend to the engine.",
        "",
        "| arm | clips | video tokens | prompt | request s | processor ms | handed over MiB | "
        "tower ms | tower peak MiB | selection ms | selection peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def fmt(value, digits=0):
        return "" if value is None else f"{value:.{digits}f}"

    for arm, by_length in results.items():
        for n in lengths:
            cell = by_length.get(n)
            if cell is None:
                continue
            lines.append(
                f"| {arm} | {n} | {cell['video_tokens']} | {fmt(cell['prompt_tokens'])} | "
                f"{fmt(cell['request_s'], 2)} | {fmt(cell['processor_ms'])} | "
                f"{fmt(cell['handed_over_mib'], 1)} | {fmt(cell['tower_ms'])} | "
                f"{fmt(cell['tower_peak_mib'])} | {fmt(cell['selection_ms'])} | "
                f"{fmt(cell['selection_peak_mib'])} |"
            )
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("accuracy", "accuracy"),
        ("needle_recall", "needle recall"),
        ("tower_ms", "vision tower ms"),
        ("selection_ms", "selection ms"),
        ("selection_peak_mib", "selection peak MiB"),
        ("handed_over_mib", "pixels handed over MiB"),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(16, 8))
    for ax, (key, label) in zip(axes.flat, panels, strict=True):
        for arm, by_length in report["results"].items():
            points = sorted(
                (cell["video_tokens"], cell[key]) for cell in by_length.values() if cell[key] is not None
            )
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=arm)
        ax.set_xscale("log", base=2)
        ax.axvline(report["context"], color="grey", lw=0.8, ls=":")
        ax.set_xlabel("video tokens (dotted: the context)")
        ax.set_title(label)
    axes.flat[0].axhline(0.2, color="grey", lw=0.6)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"Needle in a long video (proxy model, retention {report['retention']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--lengths", type=int, nargs="+", default=LENGTHS, help="clips per video")
    parser.add_argument("--needles", type=int, default=50, help="needles (videos) per length")
    parser.add_argument("--retention", type=float, default=0.1)
    parser.add_argument("--arms", nargs="+", default=ALL_ARMS, choices=ALL_ARMS)
    parser.add_argument("--name", default="long_video")
    add_output_arguments(parser)  # --small: 1 and 8 clips, 2 needles, no EVS
    args = parser.parse_args()
    if args.small:
        args.lengths, args.needles = [1, 8], 2
        args.arms = [arm for arm in args.arms if arm != "evs"]

    todo = cases(args.lengths, args.needles, DEPTHS)
    rows: list[dict] = []
    processor = ProcessorProbe()
    sharp_arms = [arm for arm in args.arms if arm != "evs"]
    started = time.perf_counter()
    if sharp_arms:
        llm = make_engine(args.model)
        for case in todo:
            for arm in sharp_arms:
                if fits(arm, case, args.retention):
                    rows.append(run_case(llm, processor, arm, args.retention, case))
            print(f"{case.length:>3} clips, depth {case.depth}: {len(rows)} requests done", flush=True)
        shutdown(llm)
    if "evs" in args.arms:
        llm = make_engine(args.model, evs_retention=args.retention)
        for case in todo:
            if fits("evs", case, args.retention):
                rows.append(run_case(llm, processor, "evs", args.retention, case))
        shutdown(llm)
    report = {
        "note": "proxy task (synthetic clips, 2M-param model trained here), not a real long-video benchmark",
        "model": str(args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model),
        "context": CONTEXT,
        "retention": args.retention,
        "lengths": args.lengths,
        "needles": args.needles,
        "depths": list(DEPTHS),
        "results": summarise(rows),
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_report(output_dir(args, "long_video"), args.name, report, markdown, plot, sources=SOURCES)


if __name__ == "__main__":
    main()
