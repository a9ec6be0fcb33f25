"""The figures of README.md and bench/README.md, each rendered from committed results in
bench/results/ (bench/report.py writes them between their markers).

bench/README.md shows each bench's own table (the `<name>.md` it wrote beside its JSON)
under the line saying where the result came from. README.md quotes a few numbers and
tables, picked out of the JSON here, so that none is typed by hand."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable

from bench.common.results import RESULTS

# name -> function returning the block's markdown (without the markers)
FIGURES: dict[str, Callable[[], str]] = {}


def figure(name: str):
    def register(render: Callable[[], str]) -> Callable[[], str]:
        FIGURES[name] = render
        return render

    return register


class MissingResult(Exception):
    pass


@functools.cache  # a result is read once per run, though several figures quote it
def load(name: str) -> dict:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        raise MissingResult(f"bench/results/{name}.json is not committed")
    return json.loads(path.read_text())


def source_line(name: str) -> str:
    """Where a result came from: its commit, versions, machine, date and command."""
    provenance = load(name).get("provenance")
    if not provenance:
        return f"*`results/{name}.json` does not record where it came from: stale, to be re-run.*"
    return (
        f"*`results/{name}.json`: commit {provenance['commit'][:8]}"
        f"{' with uncommitted changes' if provenance.get('dirty') else ''}, vLLM {provenance['vllm']}, "
        f"torch {provenance['torch']}, {provenance['machine']}, {provenance['date'][:10]}; "
        f"`{provenance['command']}`.*"
    )


def not_rerun(name: str) -> str:
    return (
        f"*The committed `results/{name}.json` predates this bench's current form (it records no "
        f"provenance, rounds or intervals), so no figure is quoted from it; `python -m bench.{name}` "
        "makes one.*"
    )


# A key that only the bench's current form writes: an older result of a different design
# (single runs, no intervals) is not quoted at all.
CURRENT_FORM = {"prefill": "shapes", "load": "rounds"}


def bench_table(name: str) -> str:
    """The result's provenance and the table its bench wrote, headings demoted under
    bench/README.md's own."""
    if name in CURRENT_FORM and CURRENT_FORM[name] not in load(name):
        return not_rerun(name)
    table = RESULTS / f"{name}.md"
    if not table.exists():
        return source_line(name) + "\n\n(No table committed with this result.)"
    body = "\n".join(
        "###" + line.lstrip("#") if line.startswith("#") else line
        for line in table.read_text().strip().splitlines()
        if not line.startswith("# ")  # the bench's own title: bench/README.md has one
    )
    return f"{source_line(name)}\n\n{body.strip()}"


BENCH_TABLES = (
    "prefill", "load", "redundancy", "soak", "soak_faults", "flops", "decode", "packed_scoring",
    "scoring_scaling", "scoring_memory", "long_video", "quality", "quality_prior_query",
    "quality_segment_mask", "lmms_eval", "long_video_ablation", "quality_long_model",
)  # fmt: skip
for _name in BENCH_TABLES:
    figure(f"table-{_name.replace('_', '-')}")(lambda name=_name: bench_table(name))


def interval(summary: dict, digits: int = 2) -> str:
    low, high = summary["ci95"]
    return f"{summary['median']:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


ARMS_QUOTED = (
    "stock", "ours, none", "sharp r=0.25", "sharp r=0.1", "sharp r=0.1, prior miss",
    "sharp r=0.1, follow-up", "EVS r=0.25", "EVS r=0.1",
)  # fmt: skip


@figure("prefill")
def prefill() -> str:
    report = load("prefill")
    if CURRENT_FORM["prefill"] not in report:
        return not_rerun("prefill")
    lines = [
        "| shape, N | arm | TTFT ms | TTFT speed-up [95%] | LM speed-up [95%] | LM ceiling |",
        "|---|---|---|---|---|---|",
    ]
    for name, shape in report["shapes"].items():
        for arm in ARMS_QUOTED:
            if arm not in shape["arms"]:
                continue
            a = shape["arms"][arm]
            lines.append(
                f"| {name}, {shape['video_tokens']} | {arm} | {a['ttft_ms_median']:.0f} | "
                f"{interval(a['ttft_speedup'])} | {interval(a['lm_speedup'])} | {a['ceiling_lm']:.2f}x |"
            )
    lines += ["", "| shape | target | median [95%] | needs | met |", "|---|---|---|---|---|"]
    for name, shape in report["shapes"].items():
        for target, t in shape["targets"].items():
            lines.append(
                f"| {name} | {target} | {interval(t, 3)} | {t['target']} | "
                f"{'yes' if t['met'] else '**no**'} |"
            )
    return "\n".join(lines) + "\n\n" + source_line("prefill")


@figure("load")
def load_figure() -> str:
    report = load("load")
    if CURRENT_FORM["load"] not in report:
        return not_rerun("load")
    lines = [
        f"{report['rounds']} rounds alternating our server and stock `vllm serve`, "
        f"{report['prompts']} requests a run at concurrency 8, N = {report['video_tokens']}:",
        "",
        "| server, method, arrivals | req/s median [95%] | TTFT p50 ms | ITL p50 ms | ITL tail ms |",
        "|---|---|---|---|---|",
    ]
    for name, a in report["summary"]["arms"].items():
        ((label, value),) = a["itl_tail"].items()
        lines.append(
            f"| {name} | {interval(a['req_s'], 3)} | {a['ttft_p50_ms']:.0f} | {a['itl_p50_ms']:.0f} | "
            f"{label} {value:.0f} |"
        )
    lines += ["", "| ratio of req/s | median [95%] |", "|---|---|"]
    lines += [f"| {name} | {interval(r, 3)} |" for name, r in report["summary"]["ratios"].items()]
    return "\n".join(lines) + "\n\n" + source_line("load")


@figure("redundancy")
def redundancy() -> str:
    report = load("redundancy")
    speed, quality = report["speed"], report["quality"]["summary"]
    lines = [
        f"TTFT on the {speed['shape_name']}-shaped model ({speed['frames']} frames of {speed['side']}², "
        f"{speed['rounds']} interleaved rounds; the post-encoder ceiling at r = 0.1 is "
        f"{speed['post_encoder_ceiling']:.2f}x) and accuracy on the proxy model "
        f"({report['quality']['per_kind']} clips a kind):",
        "",
        "| video | skip TTFT / sharp r=0.1 TTFT [95%] | skip speed-up over unpruned [95%] | "
        "proxy: accuracy, sharp r=0.1 → skip (paired diff ± SE) | proxy: tokens kept, r=0.1 / auto |",
        "|---|---|---|---|---|",
    ]
    for kind, entry in speed["summary"].items():
        skip = entry["arms"]["sharp r=0.1, skip"]
        q = quality[kind]
        diff = q["sharp r=0.1, skip"]["vs sharp r=0.1"]
        lines.append(
            f"| {kind} | {interval(entry['skip_over_sharp'], 3)} | "
            f"{interval(skip['speedup_over_unpruned'])} | "
            f"{q['sharp r=0.1']['accuracy']:.3f} → {q['sharp r=0.1, skip']['accuracy']:.3f} "
            f"({diff['difference']:+.3f} ± {diff['se']:.3f}) | "
            f"{q['sharp r=0.1']['kept']:.0f} / {q['auto']['kept']:.0f} |"
        )
    lines += ["", "Targets (a ratio meets its bound only with its whole interval):", ""]
    for kind, checks in report["targets"].items():
        verdicts = "; ".join(f"{what}: {'met' if ok else '**not met**'}" for what, ok in checks.items())
        lines.append(f"- {kind}: {verdicts}")
    return "\n".join(lines) + "\n\n" + source_line("redundancy")


@figure("recovery")
def recovery() -> str:
    report = load("soak_faults")
    faults = report["faults"]
    recovered = ", ".join(f"{s:.1f} s" for s in faults["recovery_s"] if s is not None)
    return (
        f"Under `bench/soak.py --faults` ({report['requests']} requests of a mixed load in "
        f"{report['elapsed_s']:.0f} s at concurrency {report['concurrency']}), the engine core was killed "
        f"{len(faults['kills_s'])} times; /health answered 200 again after {recovered}. "
        f"{faults['requests_lost_in_flight_at_a_kill']} requests in flight at a kill failed (each with an "
        f"error), {faults['requests_lost_otherwise']} otherwise; {faults['retried_after_503']} succeeded "
        f"after retrying a 503; {faults['tricklers']['cut_off']} slow clients were cut off and "
        f"{faults['tricklers']['outlived_the_deadline']} outlived its deadline; files left behind: "
        f"{sum(report['left_behind'].values())}.\n\n" + source_line("soak_faults")
    )


def first_table(name: str) -> str:
    """The first table of the markdown a bench wrote beside its result."""
    blocks = (RESULTS / f"{name}.md").read_text().split("\n\n")
    return next(block.strip() for block in blocks if block.lstrip().startswith("|"))


@figure("quality")
def quality() -> str:
    return first_table("quality") + "\n\n" + source_line("quality")


@figure("long-video")
def long_video() -> str:
    return first_table("long_video") + "\n\n" + source_line("long_video")


ABLATIONS = ("sharp-no-masking", "sharp-no-debias", "sharp-no-dedup")


@figure("long-video-ablation")
def long_video_ablation() -> str:
    """ShaRP's three fixes, each switched off alone, on the long-video questions: the
    accuracy change against ShaRP's default on the same videos, at both retentions."""
    lines = [
        "| r | question, clips | ShaRP default | " + " | ".join(f"{a} − sharp" for a in ABLATIONS) + " |",
        "|---|---|---|" + "---|" * len(ABLATIONS),
    ]
    sources = []
    for name in ("long_video_ablation", "long_video_ablation_r05"):
        if not (RESULTS / f"{name}.json").exists():  # the r = 0.05 run is optional
            continue
        report = load(name)
        questions = {"colour": report["results"], **report["kinds"]}
        for kind, by_arm in questions.items():
            for length, cell in by_arm["sharp"].items():
                paired = [by_arm.get(arm, {}).get(length, {}).get("vs_sharp") for arm in ABLATIONS]
                text = [f"{d['difference']:+.2f} ± {d['se']:.2f}" if d else "" for d in paired]
                lines.append(
                    f"| {report['retention']} | {kind}, {length} | {cell['accuracy']:.2f} ± "
                    f"{cell['accuracy_se']:.2f} | " + " | ".join(text) + " |"
                )
        sources.append(source_line(name))
    return "\n".join([*lines, "", *sources])


@figure("hour")
def hour() -> str:
    """The hour-long example: FLOPs from the cost model, times at an assumed sustained
    rate (not measured: no GPU here)."""
    example = load("flops")["long_video"]
    rate = 400e12  # FLOP/s sustained: about 40% of an H100's dense bf16 peak
    video, text_tokens = example["video_tokens"], example["prompt_tokens"] - example["kept"]

    def row(what: str, tokens: str, flops: float) -> str:
        return f"| {what} | {tokens} | {flops / 1e15:.2f} | {flops / rate:.1f} s |"

    return "\n".join(
        [
            f"{example['model']}, {example['frames']} frames of {example['side']}², "
            f"r = {example['retention']}, K = {example['K']}, "
            f"segments of {example['segment_groups']} groups; times at an assumed "
            f"{rate / 1e12:.0f} TFLOP/s (about 40% of an H100's dense bf16 peak), not measured:",
            "",
            "| stage | tokens | PFLOPs | at that rate |",
            "|---|---|---|---|",
            row("vision tower", f"{video:,} out", example["vision"]),
            row("scoring pass, segment-local", f"{video:,} rows", example["scoring_local"]),
            row("scoring pass, block-causal", f"{video:,} rows", example["scoring_block_causal"]),
            row("prefill of the pruned prompt", f"{example['prompt_tokens']:,}", example["pruned_prefill"]),
            row("*unpruned prefill, for scale*", f"{video + text_tokens:,}", example["unpruned_prefill"]),
            "",
            source_line("flops"),
        ]
    )


@figure("static-example")
def static_example() -> str:
    """One slideshow's report under `auto` with static groups skipped."""
    example = dict(load("redundancy")["speed"]["example"])
    example.pop("kind")
    return "```json\n" + json.dumps({"sharp": {"videos": [example]}}, indent=1) + "\n```"


@figure("decoders")
def decoders() -> str:
    """Which decoder to choose: each backend's time against a full decode of the same
    clip in the same round, for the sampling and readers a user picks between."""
    report = load("decode")
    names = [report["builds"]["installed"], report["decoders"]["pyav"]]
    if report.get("torchcodec") == "measured":
        names.append("torchcodec")
    columns = [("uniform", 1), ("uniform", 2), ("keyframes", 1), ("keyframes", 2)]
    lines = [
        "Time of a "
        f"{report['frames']}-frame decode over a full decode of the same clip in the same round "
        f"(median [95% interval], {report['rounds']} interleaved rounds), and the uniform "
        "frames that are not the frame asked for (against a sequential decode):",
        "",
        "| clip | decoder | " + " | ".join(f"{s}, {r} reader(s)" for s, r in columns) + " | wrong frames |",
        "|---|---|" + "---|" * len(columns) + "---|",
    ]
    for clip, rows in report["arms"].items():
        for name in names:
            cells = [rows.get(f"{name}, {s}, {r} reader(s)") for s, r in columns]
            text = [interval(cell["of_full_decode"], 3) if cell else "" for cell in cells]
            check = report["frames_check"][clip][name]
            text.append(f"{check['wrong']} of {check['of']}")
            lines.append(f"| {clip} | {name} | " + " | ".join(text) + " |")
    return "\n".join([*lines, "", source_line("decode")])
