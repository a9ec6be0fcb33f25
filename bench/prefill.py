"""TTFT and time per stage through the real vLLM engine on CPU, at real depth, against
stock vLLM and vLLM's EVS, each figure next to its cost-model ceiling.

Usage: python -m bench.prefill [--repeats 3] [--small]
The bench model is a Qwen2.5-VL built here with random weights: 28 decoder layers (the
7B's depth) and the 7B's vision layout (32 blocks, full attention at 7/15/23/31, windows
of 112 px), both narrowed (LM 128 wide, ViT 80 wide) so that the vision tower's share of
the unpruned prefill FLOPs stays within 10% of Qwen2.5-VL-7B's (printed). Each request is
a distinct 32-frame 448x448 video (N = 4096 video tokens) with a new question, so no
cache serves the video or the question: the default generic black prior is served from
its per-grid cache (computed once, in the warm-up), and the `prior_query: question` arm
computes its prior on every request.
Arms: stock architecture unpruned; ours with `none`; sharp at K = 1 and K = 2, fastv,
uniform at each retention; sharp with debias off, with the question prior, and a
follow-up question on the previous request's video at r = 0.1; interleaved on two live
engines, medians over repeats. vLLM's EVS needs an engine per rate (its rate is
per server): those run after, one engine at a time, against the same stock baseline.
Stages come from hooks in the worker (vision tower, black prior), the per-request report
(scoring) and the frontend (processor); LM prefill is what remains of TTFT.
Writes bench/results/prefill.json and prefill.png (--small: runs/, 1 repeat, r = 0.1).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from bench import flops
from bench.common.engines import (
    ProcessorProbe,
    bench_llm,
    install_stage_probes,
    pop_stages,
    shutdown,
    stage_totals,
    tag,
    video_reports,
)
from bench.common.results import REPO, add_output_arguments, output_dir, write_report

SOURCES = ["sharp_plugin", "server/media", "bench/prefill.py", "bench/flops.py"]

FRAMES, SIDE = 32, 448
RETENTIONS = (0.5, 0.25, 0.1, 0.05)
FOLLOW_UP = "follow-up question"
QUESTIONS = ["What colour is the {}th shape?", "Where is object {}?", "Describe moment {} of the clip."]


# ---- the bench model ----------------------------------------------------------------------
def bench_model_config() -> dict:
    """config.json fields of the bench model, as flops.py reads them."""
    return {
        "model_type": "qwen2_5_vl",
        "hidden_size": 128, "intermediate_size": 677, "num_hidden_layers": 28,
        "num_attention_heads": 4, "num_key_value_heads": 1, "vocab_size": 1024,
        "vision_config": {
            "depth": 32, "hidden_size": 80, "intermediate_size": 213, "num_heads": 2, "in_chans": 3,
            "out_hidden_size": 128, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
            "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31],
        },
    }  # fmt: skip


def build_bench_model(out: Path) -> Path:
    if (out / "config.json").exists():
        return out
    import torch

    from proxy_videoqa.checkpoint import ModelSize, build_model, qwen25vl_config, save_checkpoint
    from proxy_videoqa.tokenizer import build_tokenizer
    from scripts.build_tiny_model import CORPUS

    torch.manual_seed(0)
    tokenizer = build_tokenizer(CORPUS * 50)
    spec = bench_model_config()
    vision = spec["vision_config"]
    size = ModelSize(
        text_hidden=spec["hidden_size"], text_layers=spec["num_hidden_layers"],
        text_heads=spec["num_attention_heads"], text_kv_heads=spec["num_key_value_heads"],
        text_ffn=spec["intermediate_size"], vision_depth=vision["depth"], vision_hidden=vision["hidden_size"],
        vision_heads=vision["num_heads"], vision_ffn=vision["intermediate_size"],
    )  # fmt: skip
    config = qwen25vl_config(tokenizer, size)
    config.vision_config.fullatt_block_indexes = vision["fullatt_block_indexes"]
    return save_checkpoint(build_model(config), tokenizer, out, min_pixels=56 * 56, max_pixels=SIDE * SIDE)


# ---- requests -------------------------------------------------------------------------------
class Requests:
    def __init__(self, tokenizer):
        self.tokenizer, self.count = tokenizer, 0

    def next(self, sharp: dict | None, same_video: bool = False) -> tuple[dict, str | None]:
        """A new question; about a new video unless `same_video` (a follow-up question
        on the previous request's video)."""
        self.count += 1
        if not same_video:
            rng = np.random.RandomState(self.count)
            self.frames = (rng.rand(FRAMES, SIDE, SIDE, 3) * 255).astype(np.uint8)
        frames = self.frames
        metadata = {
            "total_num_frames": FRAMES, "fps": 2.0, "duration": FRAMES / 2.0, "video_backend": "opencv",
            "frames_indices": list(range(FRAMES)), "do_sample_frames": False,
        }  # fmt: skip
        question = QUESTIONS[self.count % len(QUESTIONS)].format(self.count)
        prompt = (
            "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>"
            f"{question}<|im_end|>\n<|im_start|>assistant\n"
        )
        request = {"prompt": prompt, "multi_modal_data": {"video": [(frames, metadata)]}}
        report_id = tag(request, sharp)
        # Prompt tokens besides the video's: the question's length varies per request.
        self.text_tokens = len(self.tokenizer.encode(prompt, add_special_tokens=False)) - 1
        return request, report_id


def make_engine(model_dir: Path, *, sharp: bool, **engine_args):
    # The processor cache stays on (vLLM's default), on both engines: with it and prefix
    # caching both off, vLLM skips content hashing and gives every item a per-request id,
    # so no cache can recognise a video (the follow-up arm needs that). Every other
    # request sends a new video, so it serves none of them.
    llm = bench_llm(
        model_dir, sharp=sharp, max_model_len=4400, max_num_seqs=1, enable_prefix_caching=False,
        mm_processor_cache_gb=1, limit_mm_per_prompt={"video": 1}, **engine_args,
    )  # fmt: skip
    llm.collective_rpc(install_stage_probes)
    return llm


def run_once(
    llm, requests: Requests, processor: ProcessorProbe, sharp: dict | None, same_video: bool = False
) -> dict:
    from vllm import SamplingParams

    request, report_id = requests.next(sharp, same_video)
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
        "vision_ms": totals.get("tower", {}).get("ms", 0.0),
        "prior_ms": totals.get("prior", {}).get("ms", 0.0),
        "prompt_tokens": len(output.prompt_token_ids),
        "text_tokens": requests.text_tokens,
        "scoring_ms": 0.0,
    }
    if report_id is not None:
        ((report,),) = video_reports(llm, [report_id])
        row["video_tokens"], row["kept"] = report.video_tokens, report.video_tokens_kept
        row["prior"] = report.prior
        # The report's scoring time includes the prior; keep the two apart.
        row["scoring_ms"] = (report.scoring_ms or 0.0) - row["prior_ms"]
    row["lm_prefill_ms"] = row["ttft_ms"] - row["processor_ms"] - row["vision_ms"] - row["scoring_ms"]
    row["lm_prefill_ms"] -= row["prior_ms"]
    return row


def arms(retentions) -> list[tuple[str, str, dict | None]]:
    """(engine, name, settings)."""
    out: list[tuple[str, str, dict | None]] = [("stock", "stock", None), ("ours", "none", {"method": "none"})]
    for r in retentions:
        out += [
            ("ours", "sharp K=1", {"retention": r, "prune_layer": 1}),
            ("ours", "sharp K=2", {"retention": r, "prune_layer": 2}),
            ("ours", "fastv", {"method": "fastv", "retention": r}),
            ("ours", "uniform", {"method": "uniform", "retention": r}),
        ]
    if 0.1 in retentions:
        out.append(("ours", "sharp K=2, debias off", {"retention": 0.1, "prune_layer": 2, "debias": "off"}))
        # A new question on the previous arm's video: the vision tower's output comes from
        # the worker's content cache. Compare with "sharp K=2" at r = 0.1 (a new video).
        out.append(("ours", f"sharp K=2, {FOLLOW_UP}", {"retention": 0.1, "prune_layer": 2}))
        out.append(
            (
                "ours",
                "sharp K=2, question prior",
                {"retention": 0.1, "prune_layer": 2, "prior_query": "question"},
            )
        )
    return out


def prune_layer(name: str, settings: dict | None) -> int | None:
    scored = name.startswith(("sharp", "fastv"))
    return (settings or {}).get("prune_layer", 2) if scored else None


def median_row(rows: list[dict]) -> dict:
    keys = [k for k in rows[0] if isinstance(rows[0][k], (int, float))]
    median = {k: statistics.median(r[k] for r in rows) for k in keys}
    # How each repeat got its black prior ("computed", "cached", None): all of them, not a median.
    median["prior"] = sorted({str(r.get("prior")) for r in rows})
    return median


# ---- ceilings from the cost model -------------------------------------------------------
def ceilings(name: str, settings: dict | None, model: flops.Model) -> dict:
    video = flops.VideoShape(FRAMES, SIDE, SIDE)
    retention = 1.0 if not settings or settings.get("method") == "none" else settings["retention"]
    if retention >= 1.0:
        return {"ceiling_lm": 1.0, "ceiling_whole": 1.0}
    method = (settings or {}).get("method", "sharp")
    if method in ("uniform", "evs"):
        s = model.stages(video, retention, 0)  # no scoring pass: K = 0 costs nothing
        lm = s["unpruned_lm"] / s["lm"]
        return {"ceiling_lm": lm, "ceiling_whole": s["unpruned_whole"] / (s["vision"] + s["lm"])}
    k_layer = settings.get("prune_layer", 2)
    # The generic prior (the default) is computed once per grid and then cached: after
    # the warm-up it costs nothing per request, like no prior at all.
    question_prior = settings.get("prior_query") == "question"
    prior = "black" if method == "sharp" and settings.get("debias") != "off" and question_prior else "off"
    s = model.stages(video, retention, k_layer, prior=prior)
    ours_lm = s["scoring"] + s["prior"] + s["lm"]
    return {
        "ceiling_lm": s["unpruned_lm"] / ours_lm,
        "ceiling_whole": s["unpruned_whole"] / (s["vision"] + ours_lm),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    add_output_arguments(parser)  # --small: 1 repeat, r = 0.1, no EVS
    args = parser.parse_args()
    retentions = (0.1,) if args.small else RETENTIONS
    repeats = 1 if args.small else args.repeats
    out = output_dir(args, "prefill")

    cost = flops.Model.load("bench", bench_model_config())
    seven_b = flops.load_models()["Qwen2.5-VL-7B"]
    video = flops.VideoShape(FRAMES, SIDE, SIDE)
    ratio = {
        "bench": cost.stages(video, 1.0, 2)["vision"] / cost.stages(video, 1.0, 2)["unpruned_lm"],
        "qwen25vl_7b": seven_b.stages(video, 1.0, 2)["vision"] / seven_b.stages(video, 1.0, 2)["unpruned_lm"],
    }
    print(
        f"vision / LM prefill FLOPs at N = {cost.vision.tokens(video)}: bench model {ratio['bench']:.3f}, "
        f"Qwen2.5-VL-7B {ratio['qwen25vl_7b']:.3f} ({ratio['bench'] / ratio['qwen25vl_7b'] - 1:+.1%})"
    )
    model_dir = build_bench_model(REPO / "runs/bench-models/prefill-28l")

    engines = {"ours": make_engine(model_dir, sharp=True), "stock": make_engine(model_dir, sharp=False)}
    processor = ProcessorProbe()
    requests = Requests(engines["ours"].get_tokenizer())
    plan = arms(retentions)
    samples: dict[str, list[dict]] = {}
    run_once(engines["ours"], requests, processor, {"retention": 0.1})  # warm-up, both engines
    run_once(engines["stock"], requests, processor, None)
    for repeat in range(repeats):
        for engine, name, settings in plan:
            key = json.dumps([name, settings], sort_keys=True)
            follow_up = name.endswith(FOLLOW_UP)
            row = run_once(engines[engine], requests, processor, settings, same_video=follow_up)
            samples.setdefault(key, []).append(row)
            print(f"repeat {repeat + 1}/{repeats}: {name} {settings or ''} done", file=sys.stderr)
    for llm in engines.values():
        shutdown(llm)
    del engines

    rows = []
    for engine, name, settings in plan:
        median = median_row(samples[json.dumps([name, settings], sort_keys=True)])
        rows.append(
            {
                "engine": engine, "method": name.split(",")[0].split(" ")[0],
                "arm": name, "settings": settings,
                "retention": (settings or {}).get("retention", 1.0),
                "prune_layer": prune_layer(name, settings),
                "video_tokens": cost.vision.tokens(video), **median, **ceilings(name, settings, cost),
            }
        )  # fmt: skip
    if not args.small:
        stock_ttft = next(r for r in rows if r["arm"] == "stock")
        for retention in retentions:
            llm = make_engine(model_dir, sharp=False, video_pruning_rate=round(1 - retention, 6))
            run_once(llm, requests, processor, None)  # warm-up
            runs = [run_once(llm, requests, processor, None) for _ in range(repeats)]
            shutdown(llm)
            settings = {"method": "evs", "retention": retention}
            rows.append(
                {
                    "engine": "stock+EVS", "method": "evs", "arm": "vLLM EVS", "settings": settings,
                    "retention": retention, "prune_layer": None, "video_tokens": stock_ttft["video_tokens"],
                    **median_row(runs), **ceilings("evs", settings, cost),
                }
            )  # fmt: skip
    report(rows, ratio, out, args)


def report(rows: list[dict], ratio: dict, out: Path, args) -> None:
    stock = next(r for r in rows if r["arm"] == "stock")
    for row in rows:
        row["ttft_speedup"] = stock["ttft_ms"] / row["ttft_ms"]
        ours_lm = row["lm_prefill_ms"] + row["scoring_ms"] + row["prior_ms"]
        row["lm_speedup"] = stock["lm_prefill_ms"] / ours_lm
        row["lm_of_ceiling"] = row["lm_speedup"] / row["ceiling_lm"]
        row["ttft_of_ceiling"] = row["ttft_speedup"] / row["ceiling_whole"]
    print("\n| arm | r | TTFT ms | processor | vision | scoring | prior | LM prefill | LM x (of ceiling) "
          "| TTFT x (of ceiling) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        stages = " | ".join(
            f"{r[k]:.0f}"
            for k in ("ttft_ms", "processor_ms", "vision_ms", "scoring_ms", "prior_ms", "lm_prefill_ms")
        )
        lm = f"{r['lm_speedup']:.2f} ({r['lm_of_ceiling']:.0%})"
        ttft = f"{r['ttft_speedup']:.2f} ({r['ttft_of_ceiling']:.0%})"
        print(f"| {r['arm']} | {r['retention']} | {stages} | {lm} | {ttft} |")
    result = {
        "vision_lm_flops_ratio": ratio,
        "frames": FRAMES,
        "side": SIDE,
        "repeats": args.repeats,
        "rows": rows,
    }
    write_report(out, "prefill", result, lambda r: "", lambda r, path: plot(r["rows"], path), sources=SOURCES)
    if not args.small:
        accuracy_against_time(rows, out)


ACCURACY_ARMS = {"sharp": "sharp K=2", "fastv": "fastv", "uniform": "uniform", "evs": "vLLM EVS"}


def accuracy_against_time(rows: list[dict], out: Path) -> None:
    """Accuracy from the proxy quality bench (bench/results/quality.json, the `shipped`
    clips) against TTFT from this run, at the same method and retention. The proxy model
    is too small for its own TTFT to mean anything; this model is too random for its
    answers to."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    quality = json.loads((REPO / "bench/results/quality.json").read_text())["results"]
    curves = {}
    for method, arm in ACCURACY_ARMS.items():
        points = []
        for row in rows:
            if row["arm"] == arm and str(row["retention"]) in quality[method]:
                cell = quality[method][str(row["retention"])]["shipped"]
                points.append(
                    {"retention": row["retention"], "ttft_ms": row["ttft_ms"], "accuracy": cell["accuracy"]}
                )
        curves[method] = sorted(points, key=lambda p: p["ttft_ms"])
    stock = next(r for r in rows if r["arm"] == "stock")
    unpruned = quality["none"]["1.0"]["shipped"]["accuracy"]
    (out / "accuracy_vs_ttft.json").write_text(
        json.dumps(
            {"unpruned": {"ttft_ms": stock["ttft_ms"], "accuracy": unpruned}, "curves": curves}, indent=1
        )
    )
    fig, ax = plt.subplots(figsize=(7, 4))
    for method, points in curves.items():
        if points:
            ax.plot([p["ttft_ms"] for p in points], [p["accuracy"] for p in points], marker="o", label=method)
            for p in points:
                ax.annotate(f"r={p['retention']}", (p["ttft_ms"], p["accuracy"]), fontsize=7)
    ax.scatter([stock["ttft_ms"]], [unpruned], color="black", label="unpruned (stock)")
    ax.set_xlabel("TTFT on the 28-layer bench model (ms)")
    ax.set_ylabel("accuracy on the proxy task (shipped clips)")
    ax.set_title("Accuracy against time to first token")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_ttft.png", dpi=100)
    plt.close(fig)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stock = next(r for r in rows if r["arm"] == "stock")
    fig, ax = plt.subplots(figsize=(7, 4))
    for arm in ("sharp K=1", "sharp K=2", "fastv", "uniform", "vLLM EVS"):
        points = sorted((r["retention"], r["ttft_ms"]) for r in rows if r["arm"] == arm)
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=arm)
    ax.axhline(stock["ttft_ms"], color="grey", linestyle="--", label="stock, unpruned")
    ax.set_xscale("log")
    ax.set_xlabel("retention")
    ax.set_ylabel("TTFT (ms)")
    ax.set_title(f"{FRAMES} frames of {SIDE}², N = {rows[0]['video_tokens']}, 28-layer bench model, CPU")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
