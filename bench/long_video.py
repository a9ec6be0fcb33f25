"""A needle in a long video (V-NIAH style), through the real vLLM engine: needle recall,
answer accuracy, and the vision tower's and the selection's time and peak memory, against
the video's length, for sharp, fastv, uniform, vLLM's EVS and an oracle.

    python -m bench.long_video            # 1 to 64 clips (128 to 8,192 video tokens), 50 needles
    python -m bench.long_video --small    # CI: 1 and 8 clips, 2 needles a question

A PROXY, NOT A REAL LONG-VIDEO BENCHMARK. The model is the 2 M-parameter Qwen2.5-VL
trained here on 8-second synthetic clips and then fine-tuned on kept tokens spread over up
to 64 clips (models/sharp-proxy-qwen25vl-long: its card has the recipe and the checks
that it reads such tokens). A long video is L clips played one after another at the
clips' own 2 fps: haystack clips (shapes of every kind but the asked one, so the haystack
is full of plausible distractors) and held-out `query` clips showing the asked shape, the
needles. Questions, each answered by one token:
- `colour`: one needle clip at a known depth (start, middle, end); "What colour is the
  triangle?", answerable from one video token of the 128 L;
- `first`: two needle clips in two colours; "What colour is the first triangle?";
- `count`: one to three needle clips; "How many times does the triangle appear?".

The engine has a 1,024-token context and every method keeps the same share of the video
(--retention, 0.1), so from 16 clips on the unpruned video is longer than the context
and only the kept tokens are served. `none` (unpruned) runs where it fits. Arms:
- the presets `sharp` (its mask is `auto`: block-causal below 16k tokens), `sharp-local`
  (the segment-local mask), `sharp-block-causal` (block-causal at every length),
  `sharp-segments` (each segment keeps its share of the budget), `fastv`
  and `uniform`, on the ShaRP engine;
- `oracle`: keeps the tokens the answer depends on first, then uniform (the ceiling of any
  selection);
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
from bench.quality import PRESETS
from proxy_videoqa.batches import chat_prompt
from proxy_videoqa.clips import Clip, make_clip
from proxy_videoqa.geometry import FPS, VIDEO_TOKENS
from proxy_videoqa.held_out import HELD_OUT_SEED
from proxy_videoqa.long_videos import KINDS, question

ROOT = REPO
SOURCES = ["sharp_plugin", "models/sharp-proxy-qwen25vl-long", "proxy_videoqa", "bench/long_video.py"]
# The long-video proxy: the shipped proxy fine-tuned on kept tokens spread over up to 64
# clips (its card says how); the short benches keep the shipped one.
LONG_MODEL = REPO / "models" / "sharp-proxy-qwen25vl-long"
CONTEXT = 1024
LENGTHS = (1, 4, 16, 64)  # clips: 128 to 8,192 video tokens (8x the context)
DEPTHS = (0.0, 0.5, 1.0)  # where the needle clip sits, as a share of the video
SHARP_ARMS = ("sharp", "sharp-local", "sharp-block-causal", "sharp-segments", "fastv", "uniform", "oracle")
ALL_ARMS = ("none", *SHARP_ARMS, "evs")
# ShaRP's three fixes, each switched off alone (the presets of configs/pruning-presets.yaml at
# the bench's retention): asked for by name, compared with `sharp` on the same videos.
ABLATION_ARMS = ("sharp-no-masking", "sharp-no-debias", "sharp-no-dedup")
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
    """One long video of `length` clips and its question. The `colour` question's needle
    clip sits at `depth`; the `first` and `count` questions' needle clips (2, and 1-3:
    the same shape in other colours) sit at places drawn from the case's own seed."""

    def __init__(
        self, kind: str, needles: list[Clip], length: int, depth: float, haystack: Haystack, index: int
    ):
        self.kind, self.needle, self.length, self.index = kind, needles[0], length, index
        shape = needle_shape(needles[0])
        if kind == "colour":
            places = [round(depth * (length - 1))]
        else:
            rng = np.random.default_rng([HAYSTACK_SEED, length, index, KINDS.index(kind)])
            places = sorted(rng.choice(length, size=len(needles), replace=False).tolist())
        self.depth = depth if kind == "colour" else places[0] / max(1, length - 1)
        others = iter(haystack.clips(shape, length - len(needles), offset=index * 7))
        self.clips = [needles[places.index(p)] if p in places else next(others) for p in range(length)]
        self.needle_tokens = [
            place * VIDEO_TOKENS + obj.token
            for place, clip in enumerate(self.clips)
            for obj in clip.objects
            if obj.shape == shape
        ]
        self.question = question(kind, shape)
        first = self.clips[places[0]]
        self.answer = {"colour": first.answer, "first": first.answer, "count": str(len(needles))}[kind]

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


class MoreNeedles:
    """Further held-out `query` clips by target shape, for the questions that show the
    shape more than once (drawn past the first needles' seeds, in a fixed order)."""

    def __init__(self, first_seed: int):
        self._by_shape: dict[str, list[Clip]] = defaultdict(list)
        self._next_seed = first_seed

    def like(self, needle: Clip, count: int, offset: int) -> list[Clip]:
        """`count` clips whose target is the needle's shape in another colour than the needle's."""
        shape = needle_shape(needle)
        found = [c for c in self._by_shape[shape] if c.answer != needle.answer]
        while len(found) < offset + count:
            clip = make_clip(self._next_seed, "query", "standard")
            self._next_seed += 1
            self._by_shape[needle_shape(clip)].append(clip)
            if needle_shape(clip) == shape and clip.answer != needle.answer:
                found.append(clip)
        return found[offset : offset + count]


def cases(lengths, needles_per_length: int, depths, kind: str = "colour") -> list[Case]:
    haystack, more = Haystack(), MoreNeedles(HELD_OUT_SEED + 100_000)
    out = []
    for length in lengths:
        for index, needle in enumerate(needles(needles_per_length)):
            depth = depths[index % len(depths)] if length > 1 else 0.0
            extra = {"colour": 0, "first": 1, "count": index % 3}[kind]
            group = [needle, *more.like(needle, extra, offset=index)]
            out.append(Case(kind, group, length, depth, haystack, index))
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
        "prompt": chat_prompt(tokenizer, case.question),
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
        "kind": case.kind,
        "length": case.length,
        "needle": case.index,
        "depth": case.depth,
        "video_tokens": case.video_tokens,
        "correct": answer == case.answer,
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
    # Paired over the same videos: against the oracle, the gap the selection leaves; against
    # ShaRP's default, whether another arm (or a fix switched off) does better or worse.
    for arm, by_length in out.items():
        for length, cell in by_length.items():
            mine = {r["needle"]: r["correct"] for r in cells[arm][length]}
            for reference in ("oracle", "sharp"):
                theirs = {r["needle"]: r["correct"] for r in cells.get(reference, {}).get(length, [])}
                shared = sorted(set(theirs) & set(mine))
                if arm != reference and len(shared) > 1:
                    cell[f"vs_{reference}"] = paired_difference(
                        [mine[n] for n in shared], [theirs[n] for n in shared]
                    )
    return out


KIND_TITLES = {
    "colour": "the needle's colour (one appearance)",
    "first": "the colour of the first of two appearances (order)",
    "count": "how many times the shape appears, 1-3 (every appearance must be kept)",
}
CHANCE = {
    "colour": "0.2 (five colours)",
    "first": "0.2 (five colours; 0.5 for a guess between the two shown)",
    "count": "1/3 (1-3)",
}


def question_tables(kind: str, by_arm: dict, lengths: list[str]) -> list[str]:
    """Accuracy ± SE (recall) per arm and length, then the paired gap to the oracle."""

    def accuracy(arm: str, cell: dict | None) -> str:
        if cell is None:
            return "does not fit" if arm == "none" else ""
        recall = cell["needle_recall"]
        text = f"{cell['accuracy']:.2f} ± {cell['accuracy_se']:.2f}"
        return text + (f" ({recall:.2f})" if recall is not None else "")

    def against(reference: str):
        def text(arm: str, cell: dict | None) -> str:
            paired = (cell or {}).get(f"vs_{reference}")
            return f"{paired['difference']:+.2f} ± {paired['se']:.2f}" if paired else ""

        return text

    def rows(cell_text, skip: tuple[str, ...] = ()) -> list[str]:
        """One row per arm, one cell per length."""
        return [
            f"| {arm} | " + " | ".join(cell_text(arm, cells.get(n)) for n in lengths) + " |"
            for arm, cells in by_arm.items()
            if arm not in skip
        ]

    lines = [
        f"## Accuracy ± its SE (recall): {KIND_TITLES[kind]}",
        "",
        "| arm | " + " | ".join(f"{n} clips ({int(n) * VIDEO_TOKENS} tokens)" for n in lengths) + " |",
        "|---|" + "---|" * len(lengths),
        *rows(accuracy),
        "",
        f"Chance is {CHANCE[kind]}. Recall: the share of the tokens the answer depends on that the "
        "selection kept, from the per-request report (EVS gives none).",
        "",
        f"### Against the oracle: {kind} (paired over the same videos: accuracy difference ± its SE)",
        "",
        "| arm | " + " | ".join(f"{n} clips" for n in lengths) + " |",
        "|---|" + "---|" * len(lengths),
        *rows(against("oracle"), skip=("oracle",)),
        "",
    ]
    if "sharp" in by_arm and len(by_arm) > 2:
        lines += [
            f"### Against ShaRP's default: {kind} (paired: the arm's accuracy minus ShaRP's ± its SE)",
            "",
            "| arm | " + " | ".join(f"{n} clips" for n in lengths) + " |",
            "|---|" + "---|" * len(lengths),
            *rows(against("sharp"), skip=("sharp",)),
            "",
        ]
    return lines


def markdown(report: dict) -> str:
    lengths = [str(n) for n in report["lengths"]]
    results = report["results"]
    lines = [
        "# A needle in a long video (proxy, V-NIAH style)",
        "",
        "A proxy, not a real long-video benchmark: a 2 M-parameter model trained here on synthetic "
        "clips, shown L clips in a row (haystack clips with every shape but the asked one's, and "
        "the needle clips). Context "
        f"{report['context']} tokens; every method keeps {report['retention']} of the video; `none` "
        f"runs only where the unpruned video fits. {report['needles']} videos per cell, model "
        f"`{report['model']}`, vLLM {report['provenance']['vllm']}, {report['provenance']['machine']}.",
        "",
    ]
    lines += question_tables("colour", results, lengths)
    for kind, by_arm in report.get("kinds", {}).items():
        lines += question_tables(kind, by_arm, [str(n) for n in report["kind_lengths"]])
    lines += [
        "## Time and memory per stage (medians, the colour question)",
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
    parser.add_argument("--model", type=Path, default=LONG_MODEL)
    parser.add_argument("--lengths", type=int, nargs="+", default=LENGTHS, help="clips per video")
    parser.add_argument("--needles", type=int, default=50, help="videos per length and question")
    parser.add_argument("--retention", type=float, default=0.1)
    parser.add_argument("--arms", nargs="+", default=ALL_ARMS, choices=ALL_ARMS + ABLATION_ARMS)
    parser.add_argument("--kinds", nargs="*", default=["first", "count"], choices=KINDS[1:],
                        help="questions asked besides the needle's colour")  # fmt: skip
    parser.add_argument("--kind-lengths", type=int, nargs="+", default=[16, 64],
                        help="clips per video for those questions")  # fmt: skip
    parser.add_argument("--name", default="long_video")
    add_output_arguments(parser)  # --small: 1 and 8 clips, 2 needles (those questions at 8), no EVS
    args = parser.parse_args()
    if args.small:
        args.lengths, args.needles, args.kind_lengths = [1, 8], 2, [8]
        args.arms = [arm for arm in args.arms if arm != "evs"]

    todo = cases(args.lengths, args.needles, DEPTHS)
    for kind in args.kinds:
        todo += cases(args.kind_lengths, args.needles, DEPTHS, kind)
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
            print(
                f"{case.kind} {case.length:>3} clips, depth {case.depth:.2f}: {len(rows)} requests",
                flush=True,
            )
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
        "results": summarise([r for r in rows if r["kind"] == "colour"]),
        "kind_lengths": args.kind_lengths,
        "kinds": {kind: summarise([r for r in rows if r["kind"] == kind]) for kind in args.kinds},
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_report(output_dir(args, "long_video"), args.name, report, markdown, plot, sources=SOURCES)


if __name__ == "__main__":
    main()
