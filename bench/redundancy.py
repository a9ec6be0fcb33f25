"""Static groups skipped before the vision tower (`skip_static`) and `retention: "auto"`,
on videos that repeat themselves and on videos that never do.

    python -m bench.redundancy            # both parts (bench/README.md gives the cost)
    python -m bench.redundancy --small    # CI: a few clips, a short video, 2 rounds

Arms: unpruned, ShaRP r = 0.1, ShaRP r = 0.1 skipping static groups, `auto`, `auto`
skipping static groups, and vLLM's EVS at r = 0.1 (its own engine).

Kinds of video, each rendered here: `still` (a fixed background, the clip's objects as
its events), `slides` (the background changes at two random groups), `pan-rest` (it
pans for the first half, then rests), and `moving` (it pans throughout: nothing is
static). `shipped` is the quality bench's own held-out clips, unchanged: their
background is still up to pixel noise, which the measure averages out.

- **Quality** (the proxy model, 8-group clips; needs no engine but ours and EVS's):
  accuracy, tokens kept and groups skipped per kind and arm, every clip's outcome kept,
  and each arm's paired difference against ShaRP r = 0.1 with its standard error.
- **Speed** (the Qwen2.5-VL-7B-shaped bench model of bench/common/shapes.py, 32 frames
  of 448 x 448, N = 4096): TTFT, tower time and tokens kept per kind and arm, the arms
  and kinds round-robin over rounds (order rotated), each ratio per round as a median
  with a 95% bootstrap interval; the post-encoder ceiling (bench/flops.py) is the
  whole-pipeline speed-up that pruning after the tower cannot pass.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench import flops
from bench.common.engines import (
    ProcessorProbe,
    bench_llm,
    evs_llm,
    frames_input,
    install_stage_probes,
    shutdown,
    tag,
    video_reports,
)
from bench.common.models import LOAD_DUMMY, write_model
from bench.common.results import REPO, add_output_arguments, output_dir, write_report
from bench.common.shapes import TARGETS, matched_config, shape_summary
from bench.common.stats import median_with_interval, paired_difference, ratio
from bench.prefill import TEMPLATE, run_once
from proxy_videoqa.batches import chat_prompt
from proxy_videoqa.clips import COLOURS, Clip, make_clip, shape_mask
from proxy_videoqa.geometry import FPS, NUM_FRAMES, TEMPORAL_PATCH
from proxy_videoqa.held_out import HELD_OUT_SEED, held_out_clips

SOURCES = [
    "sharp_plugin",
    "bench/redundancy.py",
    "bench/prefill.py",
    "bench/common",
    "models/sharp-proxy-qwen25vl",
]
MODEL = REPO / "models" / "sharp-proxy-qwen25vl"
ARMS = {
    "unpruned": {"method": "none"},
    "sharp r=0.1": {"method": "sharp", "retention": 0.1},
    "sharp r=0.1, skip": {"method": "sharp", "retention": 0.1, "skip_static": True},
    "auto": {"method": "sharp", "retention": "auto"},
    "auto, skip": {"method": "sharp", "retention": "auto", "skip_static": True},
    "EVS r=0.1": None,  # stock vLLM's EVS engine
}
BASELINE = "sharp r=0.1"
SHAPE = "qwen2.5-vl-7b"  # the speed part's bench model costs like it (bench/common/shapes.py)
STATIC_KINDS = ("still", "slides", "pan-rest")
KINDS = ("shipped", *STATIC_KINDS, "moving")


# ---- videos with (and without) redundancy ----------------------------------------------------
def backgrounds(kind: str, groups: int, side: int, rng: np.random.Generator) -> np.ndarray:
    """Each temporal group's background # [groups, side, side, 3] float: a tinted texture
    of 16-px blocks, as the proxy clips have, that stays, changes or pans by kind."""
    pan = 8  # px a group, while panning

    def texture(width: int) -> np.ndarray:
        blocks = -(-width // 16) + 1
        base = rng.uniform(40, 110, size=3)
        return (
            base + np.kron(rng.normal(0, 18, size=(blocks, blocks, 3)), np.ones((16, 16, 1)))[:side, :width]
        )

    if kind in ("still", "shipped"):
        return np.broadcast_to(texture(side), (groups, side, side, 3)).copy()
    if kind == "slides":
        # two cuts, one on a short video, so that some slide is always shown twice in a row
        cuts = set(rng.choice(np.arange(2, groups), size=min(2, groups // 4), replace=False).tolist())
        slides, out = [texture(side)], []
        for group in range(groups):
            if group in cuts:
                slides.append(texture(side))
            out.append(slides[-1])
        return np.stack(out)
    wide = texture(side + pan * groups)
    moving_groups = groups // 2 if kind == "pan-rest" else groups
    offsets = [pan * min(group, moving_groups - 1) for group in range(groups)]
    return np.stack([wide[:, x : x + side] for x in offsets])


def render(clip: Clip, kind: str) -> np.ndarray:
    """The clip's objects, in their groups and cells, over a `kind` background; every
    frame gets its own pixel noise, as in training. # [16, 112, 112, 3] uint8"""
    if kind == "shipped":
        return clip.frames
    rng = np.random.default_rng([clip.seed, KINDS.index(kind)])
    side = clip.frames.shape[1]
    groups = NUM_FRAMES // TEMPORAL_PATCH
    frames = np.repeat(backgrounds(kind, groups, side, rng), TEMPORAL_PATCH, axis=0)
    frames = frames + 14 * rng.standard_normal(frames.shape)
    for obj in clip.objects:
        mask = shape_mask(obj.shape, obj.cx, obj.cy, obj.radius)
        for frame in range(obj.group * TEMPORAL_PATCH, (obj.group + 1) * TEMPORAL_PATCH):
            frames[frame][mask] = COLOURS[obj.colour]
    return np.clip(frames, 0, 255).astype(np.uint8)


def quality_clips(per_kind: int) -> dict[str, list[Clip]]:
    """Per kind, its clips: the shipped cells as held out (query/small left out: unsolved),
    and for the rendered kinds, held-out `single` and `query` clips of the standard split."""
    shipped = [c for c in held_out_clips(-(-per_kind // 7)) if (c.task, c.split) != ("query", "small")]
    rendered = [make_clip(HELD_OUT_SEED + 500_000 + i, ("single", "query")[i % 2], "standard")
                for i in range(per_kind)]  # fmt: skip
    return {"shipped": shipped[:per_kind], **{kind: rendered for kind in KINDS[1:]}}


# ---- quality ---------------------------------------------------------------------------------
def quality(per_kind: int) -> dict:
    from vllm import SamplingParams

    clips = quality_clips(per_kind)
    common = {"max_model_len": 1024, "max_num_seqs": 32, "limit_mm_per_prompt": {"video": 1, "image": 0}}
    outcomes: dict[str, dict[str, list[dict]]] = {kind: {} for kind in KINDS}
    bar = tqdm(total=sum(map(len, clips.values())) * len(ARMS), unit="clip", desc="quality")
    for engine_arm in ("ours", "EVS r=0.1"):
        llm = bench_llm(MODEL, **common) if engine_arm == "ours" else evs_llm(MODEL, 0.1, **common)
        tokenizer = llm.get_tokenizer()
        arms = [a for a in ARMS if (a == "EVS r=0.1") == (engine_arm != "ours")]
        for kind, kind_clips in clips.items():
            for arm in arms:
                requests, report_ids = [], []
                for clip in kind_clips:
                    video = frames_input(render(clip, kind), FPS)
                    request = {
                        "prompt": chat_prompt(tokenizer, clip.question),
                        "multi_modal_data": {"video": video},
                    }
                    report_ids.append(tag(request, ARMS[arm]))
                    requests.append(request)
                outputs = llm.generate(
                    requests, SamplingParams(max_tokens=1, temperature=0.0), use_tqdm=False
                )
                reports = video_reports(llm, report_ids)
                outcomes[kind][arm] = [
                    {
                        "correct": int(tokenizer.decode(out.outputs[0].token_ids).strip() == clip.answer),
                        "prompt_tokens": len(out.prompt_token_ids),
                        "kept": rep[0].video_tokens_kept if rep else None,
                        "groups_skipped": rep[0].groups_skipped if rep else 0,
                    }
                    for clip, out, rep in zip(kind_clips, outputs, reports, strict=True)
                ]
                bar.update(len(kind_clips))
        shutdown(llm)
    bar.close()
    summary = {}
    for kind, by_arm in outcomes.items():
        base = [row["correct"] for row in by_arm[BASELINE]]
        summary[kind] = {
            arm: {
                "n": len(rows),
                "accuracy": float(np.mean([row["correct"] for row in rows])),
                "prompt_tokens": float(np.mean([row["prompt_tokens"] for row in rows])),
                "kept": float(np.mean([row["kept"] for row in rows]))
                if rows[0]["kept"] is not None
                else None,
                "groups_skipped": float(np.mean([row["groups_skipped"] for row in rows])),
                f"vs {BASELINE}": paired_difference([row["correct"] for row in rows], base),
            }
            for arm, rows in by_arm.items()
        }
    return {"per_kind": per_kind, "summary": summary, "outcomes": outcomes}


# ---- speed -----------------------------------------------------------------------------------
@dataclass
class KindVideos:
    """A new video of one kind per request: 32 frames at the bench shape's side, a new
    texture each time (no cache serves it) and one event (a coloured square for one
    group), and a new question."""

    kind: str
    frames: int
    side: int
    count: int = 0

    def request(self, arm) -> tuple[dict, str | None]:
        self.count += 1
        rng = np.random.default_rng([self.count, KINDS.index(self.kind)])
        groups = self.frames // TEMPORAL_PATCH
        frames = np.repeat(backgrounds(self.kind, groups, self.side, rng), TEMPORAL_PATCH, axis=0)
        event, x, y = int(rng.integers(1, groups)), *rng.integers(0, self.side - 64, size=2)
        frames[event * TEMPORAL_PATCH : (event + 1) * TEMPORAL_PATCH, y : y + 64, x : x + 64] = (220, 40, 40)
        frames = np.clip(frames + 4 * rng.standard_normal(frames.shape), 0, 255).astype(np.uint8)
        request = {
            "prompt": TEMPLATE.format(f"What happens at moment {self.count}?"),
            "multi_modal_data": {"video": frames_input(frames, 2.0)},
        }
        return request, tag(request, arm.sharp)


@dataclass(frozen=True)
class SpeedArm:
    name: str
    engine: str
    sharp: dict | None


def speed(rounds: int, small: bool) -> dict:
    config = matched_config(SHAPE)
    video = TARGETS[SHAPE][1]
    frames, side = (8, 224) if small else (video.frames, video.height)
    model_dir = write_model(REPO / "runs" / "bench-models" / f"redundancy{'-small' if small else ''}", config,
                            max_pixels=side * side)  # fmt: skip
    common = {
        "max_model_len": 4400,
        "max_num_seqs": 1,
        "enable_prefix_caching": False,
        "mm_processor_cache_gb": 0,
        "limit_mm_per_prompt": {"video": 1, "image": 0},
        **LOAD_DUMMY,
    }
    engines = {"ours": bench_llm(model_dir, **common), "evs": evs_llm(model_dir, 0.1, **common)}
    for llm in engines.values():
        llm.collective_rpc(install_stage_probes)
    arms = [SpeedArm(name, "evs" if sharp is None else "ours", sharp) for name, sharp in ARMS.items()]
    kinds = [kind for kind in KINDS if kind != "shipped"]
    videos = {kind: KindVideos(kind, frames, side) for kind in kinds}
    units = [(kind, arm) for kind in kinds for arm in arms]
    processor = ProcessorProbe()
    for kind, arm in units:  # warm-up
        run_once(engines[arm.engine], videos[kind], processor, arm)
    samples: dict[str, dict[str, list[dict]]] = {kind: {arm.name: [] for arm in arms} for kind in kinds}
    for index in range(rounds):
        for kind, arm in units[index % len(units) :] + units[: index % len(units)]:
            samples[kind][arm.name].append(run_once(engines[arm.engine], videos[kind], processor, arm))
        print(f"redundancy speed: round {index + 1}/{rounds}", file=sys.stderr, flush=True)
    example = _example(engines["ours"], KindVideos("slides", frames, side))
    for llm in engines.values():
        shutdown(llm)
    cost = flops.Model.load(SHAPE, config)
    stages = cost.stages(flops.VideoShape(frames, side, side), 0.1, 2, prior="cached")
    ceiling = stages["unpruned_whole"] / (
        stages["vision"] + stages["scoring"] + stages["prior"] + stages["lm"]
    )
    summary = {}
    for kind, by_arm in samples.items():
        ttft = {arm: [row["ttft_ms"] for row in rows] for arm, rows in by_arm.items()}
        summary[kind] = {
            "arms": {
                arm: {
                    "ttft_ms": median_with_interval(ttft[arm]),
                    "tower_ms": median_with_interval([row["tower_ms"] for row in rows]),
                    "kept": float(np.median([row.get("kept", row["prompt_tokens"]) for row in rows])),
                    "speedup_over_unpruned": ratio(ttft["unpruned"], ttft[arm]),
                }
                for arm, rows in by_arm.items()
            },
            "skip_over_sharp": ratio(ttft["sharp r=0.1, skip"], ttft[BASELINE]),
        }
    return {
        "frames": frames,
        "side": side,
        "rounds": rounds,
        "shape_name": SHAPE,
        "shape": shape_summary(config, SHAPE),
        "post_encoder_ceiling": ceiling,
        "summary": summary,
        "samples": samples,
        "example": example,
    }


def _example(llm, videos: KindVideos) -> dict:
    """One slideshow's report under `auto` with static groups skipped: the picture of the
    rule in docs/method.md."""
    from vllm import SamplingParams

    request, report_id = videos.request(SpeedArm("auto, skip", "ours", ARMS["auto, skip"]))
    llm.generate([request], SamplingParams(max_tokens=1), use_tqdm=False)
    ((report,),) = video_reports(llm, [report_id])
    fields = {"video_tokens", "video_tokens_kept", "retention", "groups_skipped", "redundancy"}
    return {"kind": videos.kind, **report.model_dump(include=fields)}


def within_one_se(diff: dict) -> bool:
    """A paired difference no larger than its standard error (identical outcomes: 0, 0)."""
    return abs(diff["difference"]) <= diff["se"] or diff["difference"] == 0


def targets(report: dict) -> dict:
    speed_summary, quality_summary = report["speed"]["summary"], report["quality"]["summary"]
    ceiling = report["speed"]["post_encoder_ceiling"]
    out = {}
    for kind in STATIC_KINDS:
        skip = speed_summary[kind]["skip_over_sharp"]
        faster = speed_summary[kind]["arms"]["sharp r=0.1, skip"]["speedup_over_unpruned"]
        diff = quality_summary[kind]["sharp r=0.1, skip"][f"vs {BASELINE}"]
        kept = {arm: quality_summary[kind][arm]["kept"] for arm in ("auto", BASELINE)}
        out[kind] = {
            "skip TTFT / sharp TTFT <= 0.67": skip["ci95"][1] <= 0.67,
            "skip speed-up over unpruned > post-encoder ceiling": faster["ci95"][0] > ceiling,
            "skip accuracy within one paired SE of sharp": within_one_se(diff),
            "auto keeps fewer than r=0.1": kept["auto"] < kept[BASELINE],
        }
    moving = speed_summary["moving"]
    out["moving"] = {
        "nothing skipped": quality_summary["moving"]["sharp r=0.1, skip"]["groups_skipped"] == 0,
        "skip costs at most 3% TTFT": moving["skip_over_sharp"]["ci95"][1] <= 1.03,
    }
    shipped = quality_summary["shipped"]
    diff = shipped["auto"][f"vs {BASELINE}"]
    out["shipped"] = {
        "auto keeps no more than r=0.1": shipped["auto"]["kept"] <= shipped[BASELINE]["kept"],
        "auto accuracy within one paired SE of r=0.1": within_one_se(diff),
    }
    return out


# ---- the report ------------------------------------------------------------------------------
def markdown(report: dict) -> str:
    speed_report, quality_report = report["speed"], report["quality"]
    lines = [
        "# Skipping static groups, and retention auto",
        "",
        f"## Speed: {speed_report['shape_name']}-shaped bench model, {speed_report['frames']} frames of "
        f"{speed_report['side']}², {speed_report['rounds']} interleaved rounds",
        "",
        f"Post-encoder ceiling (ShaRP r = 0.1, K = 2, prior cached): "
        f"{speed_report['post_encoder_ceiling']:.2f}x.",
        "",
        "| kind | arm | TTFT ms [95% CI] | tower ms | kept | speed-up over unpruned [95% CI] |",
        "|---|---|---|---|---|---|",
    ]
    for kind, entry in speed_report["summary"].items():
        for arm, row in entry["arms"].items():
            ttft, up = row["ttft_ms"], row["speedup_over_unpruned"]
            lines.append(
                f"| {kind} | {arm} | {ttft['median']:.0f} [{ttft['ci95'][0]:.0f}, {ttft['ci95'][1]:.0f}] | "
                f"{row['tower_ms']['median']:.0f} | {row['kept']:.0f} | "
                f"{up['median']:.2f} [{up['ci95'][0]:.2f}, {up['ci95'][1]:.2f}] |"
            )
    lines += ["", "| kind | skip TTFT / sharp r=0.1 TTFT [95% CI] |", "|---|---|"]
    for kind, entry in speed_report["summary"].items():
        r = entry["skip_over_sharp"]
        lines.append(f"| {kind} | {r['median']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] |")
    lines += [
        "",
        f"## Quality: the proxy model, {quality_report['per_kind']} clips per kind",
        "",
        f"| kind | arm | accuracy | vs {BASELINE} (paired, ± SE) | tokens kept | groups skipped |",
        "|---|---|---|---|---|---|",
    ]
    for kind, by_arm in quality_report["summary"].items():
        for arm, row in by_arm.items():
            diff = row[f"vs {BASELINE}"]
            kept = "" if row["kept"] is None else f"{row['kept']:.1f}"
            lines.append(
                f"| {kind} | {arm} | {row['accuracy']:.3f} | {diff['difference']:+.3f} ± {diff['se']:.3f} | "
                f"{kept} | {row['groups_skipped']:.2f} |"
            )
    lines += ["", "## Targets", ""]
    for kind, checks in report["targets"].items():
        for what, ok in checks.items():
            lines.append(f"- {kind}: {what}: {'met' if ok else 'NOT met'}")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = report["speed"]["summary"]
    kinds, arms = list(summary), [a for a in ARMS if a != "unpruned"]
    fig, (speedup, example) = plt.subplots(1, 2, figsize=(15, 5), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.8 / len(arms)
    for i, arm in enumerate(arms):
        rows = [summary[kind]["arms"][arm]["speedup_over_unpruned"] for kind in kinds]
        x = np.arange(len(kinds)) + (i - len(arms) / 2 + 0.5) * width
        medians = [r["median"] for r in rows]
        errors = [
            [m - r["ci95"][0] for m, r in zip(medians, rows, strict=True)],
            [r["ci95"][1] - m for m, r in zip(medians, rows, strict=True)],
        ]
        speedup.bar(x, medians, width, yerr=errors, capsize=2, label=arm)
    speedup.axhline(report["speed"]["post_encoder_ceiling"], color="k", ls="--", lw=1,
                    label="post-encoder ceiling (ShaRP r=0.1)")  # fmt: skip
    speedup.set_xticks(range(len(kinds)), kinds)
    speedup.set_ylabel("TTFT speed-up over unpruned (median, 95% CI)")
    speedup.legend(fontsize=7)
    speedup.set_title(
        f"{report['speed']['shape_name']}-shaped model, N = {report['speed']['example']['video_tokens']}"
    )
    plot_example(report["speed"]["example"], example)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_example(example: dict, ax) -> None:
    """One video's per-group change, the groups skipped, and the budget `auto` chose."""
    redundancy = example["redundancy"]
    changed = redundancy["changed_per_group"]
    skipped = set(redundancy["skipped_groups"])
    colours = ["lightgrey" if g in skipped else "tab:blue" for g in range(len(changed))]
    ax.bar(range(len(changed)), changed, color=colours)
    ax.set_xlabel("temporal group (grey: static, skipped before the tower)")
    ax.set_ylabel("tokens changed from the group before")
    ax.set_title(
        f"a {example['kind']} video: {redundancy['new_tokens']} new tokens of {example['video_tokens']}; "
        f"auto keeps {example['video_tokens_kept']}",
        fontsize=9,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-kind", type=int, default=200, help="proxy clips per kind")
    add_output_arguments(parser)
    args = parser.parse_args()
    if args.small:
        args.rounds, args.per_kind = 2, 6
    started = time.perf_counter()
    report = {"quality": quality(args.per_kind), "speed": speed(args.rounds, args.small)}
    report["targets"] = targets(report)
    report["seconds"] = round(time.perf_counter() - started, 1)
    write_report(output_dir(args, "redundancy"), "redundancy", report, markdown, plot, sources=SOURCES)


if __name__ == "__main__":
    main()
