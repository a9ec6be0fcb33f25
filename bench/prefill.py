"""TTFT and time per stage through the real vLLM engine, on models that cost like
Qwen2.5-VL-7B and Qwen3-VL-8B, against stock vLLM and vLLM's EVS, each figure next to
its cost-model ceiling, with the arms interleaved over rounds.

    python -m bench.prefill [--shapes qwen2.5-vl-7b qwen3-vl-8b] [--rounds 5]
    python -m bench.prefill --small   # CI: a 4-layer shape, a short video, 2 rounds

The models (bench/common/shapes.py): the real depth (28 and 36 layers) and widths chosen
so that, at the measured video (32 frames, N = 4096 video tokens), the language model's
attention share of its prefill FLOPs and the vision tower's FLOPs against the language
model's are the real model's, within 10% (printed, and in the JSON). Random weights
(`load_format: dummy`): speed does not depend on them.

Each request is a new video and a new question, so no cache serves the video or the
question; the default generic black prior is served from its per-grid cache (computed
in the warm-up), and the prior-miss arm (`prior_query: question`) computes its prior on
every request. The arms run round-robin on engines that all stay up, the order rotated
each round; each ratio is taken per round against that round's stock run, and reported
as a median with a 95% bootstrap interval (bench/common/stats.py). A target is met only
when its interval's lower end clears it.

Stages: the processor (frontend), the vision tower and the black prior (hooks in the
worker), the scoring pass (the per-request report, less the prior); the language
model's prefill is what remains of TTFT. Ceilings (bench/flops.py) are computed for the
shape run: the LM ceiling `unpruned LM / (scoring + prior + pruned LM)`, and the TTFT
stage ceiling `stock TTFT / (tower + processor + stock LM / LM ceiling)`, which charges
the stages that pruning after the tower cannot shorten at what this run measured.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench import flops
from bench.common.engines import (
    ProcessorProbe,
    bench_llm,
    evs_llm,
    install_stage_probes,
    pop_stages,
    shutdown,
    stage_totals,
    tag,
    video_reports,
)
from bench.common.models import LOAD_DUMMY, text_of, write_model
from bench.common.results import REPO, add_output_arguments, output_dir, write_report
from bench.common.shapes import TARGETS, matched_config, shape_summary
from bench.common.stats import median_with_interval, met, ratio, within

SOURCES = ["sharp_plugin", "bench/prefill.py", "bench/flops.py", "bench/common"]
STAGES = ("ttft_ms", "processor_ms", "tower_ms", "scoring_ms", "prior_ms", "lm_ms")
QUESTIONS = ["What colour is the {}th shape?", "Where is object {}?", "Describe moment {} of the clip."]
# The prompt's text around the video, as flops.py counts it.
# vLLM 0.32's EVS on Qwen3-VL crashes in its M-RoPE recompute (the prompt's per-frame
# counts do not match the pruned embeddings: vllm-project/vllm#30847, open), so the
# EVS arms run on Qwen2.5-VL only and are recorded as not run on Qwen3-VL.
EVS_BROKEN = {"qwen3-vl-8b": "vLLM 0.32's EVS on Qwen3-VL crashes (vllm-project/vllm#30847)"}
TEMPLATE = (
    "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>{}<|im_end|>\n<|im_start|>assistant\n"
)


@dataclass(frozen=True)
class Arm:
    name: str
    engine: str  # stock, ours, evs-<r>
    sharp: dict | None = None  # the request's settings (ours)
    same_video: bool = False  # a follow-up question on the previous request's video
    prior: str = "cached"  # the ceiling's prior (flops.Model.stages)

    @property
    def retention(self) -> float:
        if self.engine.startswith("evs-"):
            return float(self.engine[4:])
        return (self.sharp or {}).get("retention", 1.0) if (self.sharp or {}).get("method") != "none" else 1.0

    @property
    def method(self) -> str:
        if self.engine == "stock":
            return "stock"
        if self.engine.startswith("evs-"):
            return "evs"
        return (self.sharp or {}).get("method", "sharp")


def arms(small: bool) -> list[list[Arm]]:
    """The arms, in units that keep their order within a round (a follow-up question
    right after the request whose video it asks about again)."""
    units = [
        [Arm("stock", "stock")],
        [Arm("ours, none", "ours", {"method": "none"})],
        [Arm("sharp r=0.1", "ours", {"retention": 0.1}),
         Arm("sharp r=0.1, follow-up", "ours", {"retention": 0.1}, same_video=True)],
        [Arm("sharp r=0.1, prior miss", "ours", {"retention": 0.1, "prior_query": "question"}, prior="miss")],
        [Arm("EVS r=0.1", "evs-0.1")],
    ]  # fmt: skip
    if not small:
        units += [
            [Arm("sharp r=0.25", "ours", {"retention": 0.25})],
            [Arm("fastv r=0.1", "ours", {"method": "fastv", "retention": 0.1}, prior="off")],
            [Arm("uniform r=0.1", "ours", {"method": "uniform", "retention": 0.1}, prior="off")],
            [Arm("EVS r=0.25", "evs-0.25")],
        ]
    return units


class Videos:
    """A new video (random pixels: nothing to cache) and a new question per request."""

    def __init__(self, frames: int, side: int):
        self.frames, self.side, self.count, self.last = frames, side, 0, None

    def request(self, arm: Arm) -> tuple[dict, str | None]:
        self.count += 1
        if not arm.same_video or self.last is None:
            rng = np.random.RandomState(self.count)
            self.last = (rng.rand(self.frames, self.side, self.side, 3) * 255).astype(np.uint8)
        metadata = {
            "total_num_frames": self.frames, "fps": 2.0, "duration": self.frames / 2.0,
            "video_backend": "opencv", "frames_indices": list(range(self.frames)), "do_sample_frames": False,
        }  # fmt: skip
        question = QUESTIONS[self.count % len(QUESTIONS)].format(self.count)
        request = {
            "prompt": TEMPLATE.format(question),
            "multi_modal_data": {"video": [(self.last, metadata)]},
        }
        return request, tag(request, arm.sharp)


@dataclass
class Shape:
    name: str
    config: dict
    model_dir: Path
    frames: int
    side: int
    engines: dict = field(default_factory=dict)


def build_shape(name: str, small: bool) -> Shape:
    config = matched_config(name)
    video = TARGETS[name][1]
    frames, side = video.frames, video.height
    if small:  # the machinery, quickly: 4 layers, a short video
        text_of(config)["num_hidden_layers"] = 4
        frames, side = 8, 224
    model_dir = write_model(REPO / "runs" / "bench-models" / f"{name}{'-small' if small else ''}", config,
                            max_pixels=side * side)  # fmt: skip
    return Shape(name, config, model_dir, frames, side)


def start_engines(shape: Shape, engine_names: set[str]) -> None:
    common = {
        "max_model_len": 4400 if shape.frames >= 32 else 1024, "max_num_seqs": 1,
        "enable_prefix_caching": False,
        # The processor cache stays on (vLLM's default): without it and prefix caching,
        # vLLM gives every item a per-request id and no cache could recognise a video
        # (the follow-up arm needs that); every other request sends a new video.
        "mm_processor_cache_gb": 1, "limit_mm_per_prompt": {"video": 1, "image": 0}, **LOAD_DUMMY,
    }  # fmt: skip
    for name in sorted(engine_names):
        if name == "stock":
            llm = bench_llm(shape.model_dir, sharp=False, **common)
        elif name == "ours":
            llm = bench_llm(shape.model_dir, **common)
        else:
            llm = evs_llm(shape.model_dir, float(name[4:]), **common)
        llm.collective_rpc(install_stage_probes)
        shape.engines[name] = llm


def run_once(llm, videos: Videos, processor: ProcessorProbe, arm: Arm) -> dict:
    from vllm import SamplingParams

    request, report_id = videos.request(arm)
    llm.collective_rpc(pop_stages)
    processor.pop()
    started = time.perf_counter()
    (output,) = llm.generate([request], SamplingParams(max_tokens=1, temperature=0.0), use_tqdm=False)
    ttft = (time.perf_counter() - started) * 1e3
    (stages,) = llm.collective_rpc(pop_stages)
    totals = stage_totals(stages)
    row = {
        "ttft_ms": ttft,
        "processor_ms": processor.pop()[0],
        "tower_ms": totals.get("tower", {}).get("ms", 0.0),
        "prior_ms": totals.get("prior", {}).get("ms", 0.0),
        "scoring_ms": 0.0,
        "prompt_tokens": len(output.prompt_token_ids),
        "prior": None,
    }
    if report_id is not None:
        ((report,),) = video_reports(llm, [report_id])
        row.update(video_tokens=report.video_tokens, kept=report.video_tokens_kept, prior=report.prior)
        # The report's scoring time includes the prior: keep the two apart.
        row["scoring_ms"] = max(0.0, (report.scoring_ms or 0.0) - row["prior_ms"])
    row["lm_ms"] = (
        row["ttft_ms"] - row["processor_ms"] - row["tower_ms"] - row["scoring_ms"] - row["prior_ms"]
    )
    return row


def measure(shape: Shape, units: list[list[Arm]], rounds: int) -> dict[str, list[dict]]:
    """Every arm once per round, the order of units rotated each round."""
    start_engines(shape, {arm.engine for unit in units for arm in unit})
    processor = ProcessorProbe()
    videos = Videos(shape.frames, shape.side)
    for unit in units:  # warm-up: one-time costs (kernels for new shapes, the generic prior)
        for arm in unit:
            run_once(shape.engines[arm.engine], videos, processor, arm)
    samples: dict[str, list[dict]] = {arm.name: [] for unit in units for arm in unit}
    for index in range(rounds):
        order = units[index % len(units) :] + units[: index % len(units)]
        for unit in order:
            for arm in unit:
                samples[arm.name].append(run_once(shape.engines[arm.engine], videos, processor, arm))
        print(f"{shape.name}: round {index + 1}/{rounds} done", file=sys.stderr, flush=True)
    for llm in shape.engines.values():
        shutdown(llm)
    shape.engines.clear()
    return samples


def ceilings(arm: Arm, model: flops.Model, video: flops.VideoShape) -> dict:
    if arm.retention >= 1.0:
        return {"lm": 1.0, "whole": 1.0}
    k_layer = 0 if arm.method in ("uniform", "evs") else (arm.sharp or {}).get("prune_layer", 2)
    stages = model.stages(video, arm.retention, k_layer, prior=arm.prior)
    ours_lm = stages["scoring"] + stages["prior"] + stages["lm"]
    return {
        "lm": stages["unpruned_lm"] / ours_lm,
        "whole": stages["unpruned_whole"] / (stages["vision"] + ours_lm),
    }


def summarise(shape: Shape, units: list[list[Arm]], samples: dict[str, list[dict]]) -> dict:
    model = flops.Model.load(shape.name, shape.config)
    video = flops.VideoShape(shape.frames, shape.side, shape.side)
    stock = samples["stock"]
    out = {}
    for arm in (arm for unit in units for arm in unit):
        rows = samples[arm.name]
        ceiling = ceilings(arm, model, video)
        lm_work = [r["lm_ms"] + r["scoring_ms"] + r["prior_ms"] for r in rows]
        ttft_speedup = ratio([s["ttft_ms"] for s in stock], [r["ttft_ms"] for r in rows])
        lm_speedup = ratio([s["lm_ms"] for s in stock], lm_work)
        # The TTFT this run could reach at most: its own tower and processor, and the
        # stock LM cut by the LM ceiling.
        stage_ceiling = [
            s["ttft_ms"] / (r["tower_ms"] + r["processor_ms"] + s["lm_ms"] / ceiling["lm"])
            for s, r in zip(stock, rows, strict=True)
        ]
        out[arm.name] = {
            "engine": arm.engine, "method": arm.method, "retention": arm.retention, "settings": arm.sharp,
            "prior_ceiling": arm.prior, "rows": rows,
            **{f"{k}_median": statistics.median(r[k] for r in rows) for k in (*STAGES, "prompt_tokens")},
            "prior_status": sorted({str(r["prior"]) for r in rows}),
            "ceiling_lm": ceiling["lm"], "ceiling_whole": ceiling["whole"],
            "ttft_speedup": ttft_speedup,
            "lm_speedup": lm_speedup,
            "lm_of_ceiling": median_with_interval([x / ceiling["lm"] for x in lm_speedup["rounds"]]),
            "ttft_of_ceiling": median_with_interval([x / ceiling["whole"] for x in ttft_speedup["rounds"]]),
            "ttft_of_stage_ceiling": median_with_interval(
                [x / c for x, c in zip(ttft_speedup["rounds"], stage_ceiling, strict=True)]
            ),
        }  # fmt: skip
    return out


def targets(arms: dict) -> dict:
    """The issue's targets on this shape, each met only when its interval's lower end
    clears it."""
    out = {}

    def add(name: str, summary: dict, target: str, ok: bool) -> None:
        out[name] = {"median": summary["median"], "ci95": summary["ci95"], "target": target, "met": ok}

    cached, miss = arms["sharp r=0.1"], arms["sharp r=0.1, prior miss"]
    add(
        "LM speed-up at r=0.1, prior cached, of its ceiling",
        cached["lm_of_ceiling"],
        ">= 0.90",
        met(cached["lm_of_ceiling"], 0.9),
    )
    add(
        "LM speed-up at r=0.1, prior miss, of its ceiling",
        miss["lm_of_ceiling"],
        ">= 0.90",
        met(miss["lm_of_ceiling"], 0.9),
    )
    add(
        "TTFT speed-up at r=0.1 of the stage ceiling",
        cached["ttft_of_stage_ceiling"],
        ">= 0.90",
        met(cached["ttft_of_stage_ceiling"], 0.9),
    )
    none_ratio = ratio(
        [r["ttft_ms"] for r in arms["ours, none"]["rows"]], [r["ttft_ms"] for r in arms["stock"]["rows"]]
    )
    add(
        "ours with none against stock (TTFT ratio)",
        none_ratio,
        "within 0.97..1.03",
        within(none_ratio, 0.97, 1.03),
    )
    return out  # fmt: skip


def markdown(report: dict) -> str:
    lines = ["# Prefill on models that cost like the real ones", ""]
    for name, shape in report["shapes"].items():
        s = shape["shape"]
        lines += [
            f"## {name}-shaped ({shape['layers']} layers, N = {shape['video_tokens']} video tokens, "
            f"{report['rounds']} interleaved rounds)",
            "",
            f"At N = {s['video_tokens']}: attention share of LM FLOPs "
            f"{s['attention_share']['bench']:.3f} (real {s['attention_share']['target']:.3f}); vision/LM "
            f"FLOPs {s['vision_lm_ratio']['bench']:.3f} (real {s['vision_lm_ratio']['target']:.3f}).",
            "",
            "| arm | TTFT ms | processor | tower | scoring | prior | LM | TTFT x [95%] | LM x [95%] "
            "| LM of ceiling |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for arm, a in shape["arms"].items():
            t, lm = a["ttft_speedup"], a["lm_speedup"]
            stages = " | ".join(f"{a[k + '_median']:.0f}" for k in STAGES)
            lines.append(
                f"| {arm} | {stages} | {t['median']:.2f} [{t['ci95'][0]:.2f}, {t['ci95'][1]:.2f}] | "
                f"{lm['median']:.2f} [{lm['ci95'][0]:.2f}, {lm['ci95'][1]:.2f}] | "
                f"{a['lm_of_ceiling']['median']:.0%} of {a['ceiling_lm']:.2f}x |"
            )
        for arm, why in shape.get("not_run", {}).items():
            lines.append(f"| {arm} | not run: {why} |||||||||")
        lines += ["", "| target | median [95%] | needs | met |", "|---|---|---|---|"]
        for target, t in shape["targets"].items():
            lines.append(
                f"| {target} | {t['median']:.3f} [{t['ci95'][0]:.3f}, {t['ci95'][1]:.3f}] | {t['target']} | "
                f"{'yes' if t['met'] else 'no'} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = report["shapes"]
    fig, axes = plt.subplots(1, len(shapes), figsize=(7 * len(shapes), 4.5), squeeze=False)
    stages = STAGES[1:]
    for ax, (name, shape) in zip(axes[0], shapes.items(), strict=True):
        names = list(shape["arms"])
        bottom = np.zeros(len(names))
        for stage in stages:
            values = np.array([shape["arms"][n][stage + "_median"] / 1e3 for n in names])
            ax.barh(names, values, left=bottom, label=stage.removesuffix("_ms"))
            bottom += values
        ax.invert_yaxis()
        ax.set_xlabel("median TTFT by stage (s)")
        ax.set_title(f"{name}-shaped, N = {shape['shape']['video_tokens']}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--rounds", type=int, default=5)
    add_output_arguments(parser)
    args = parser.parse_args()
    if args.small:
        args.shapes, args.rounds = ["qwen2.5-vl-7b"], 2
    report = {"rounds": args.rounds, "small": args.small, "shapes": {}}
    for name in args.shapes:
        units = [unit for unit in arms(args.small) if name not in EVS_BROKEN or unit[0].method != "evs"]
        not_run = {unit[0].name: EVS_BROKEN[name] for unit in arms(args.small) if unit not in units}
        shape = build_shape(name, args.small)
        # The full shape's costs at the real video (--small cuts its layers and video).
        summary = shape_summary(matched_config(name), name)
        print(f"{name}: {summary}", file=sys.stderr)
        samples = measure(shape, units, args.rounds)
        arms_summary = summarise(shape, units, samples)
        report["shapes"][name] = {
            "shape": summary,
            "layers": text_of(shape.config)["num_hidden_layers"],
            "video_tokens": flops.Model.load(name, shape.config).vision.tokens(
                flops.VideoShape(shape.frames, shape.side, shape.side)
            ),
            "video": {"frames": shape.frames, "side": shape.side},
            "config": shape.config,
            "arms": arms_summary,
            "not_run": not_run,
            "targets": targets(arms_summary),
        }
    write_report(output_dir(args, "prefill"), "prefill", report, markdown, plot, sources=SOURCES)


if __name__ == "__main__":
    main()
