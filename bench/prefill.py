"""TTFT and time per stage through the real vLLM engine on CPU, at real depth, against
stock vLLM and vLLM's EVS, each figure next to its cost-model ceiling.

Usage: python bench/prefill.py [--repeats 3] [--small]
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
follow-up question on the previous request's video at r = 0.1;
each change to the scoring pass before and after it; interleaved on two live
engines, medians over repeats. vLLM's EVS needs an engine per rate (its rate is
per server): those run after, one engine at a time, against the same stock baseline.
Stages come from hooks in the worker (vision tower, black prior), the per-request report
(scoring) and the frontend (processor); LM prefill is what remains of TTFT.
Writes bench/results/prefill.json and prefill.png (--small: runs/, 1 repeat, r = 0.1).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import flops  # noqa: E402

FRAMES, SIDE = 32, 448
RETENTIONS = (0.5, 0.25, 0.1, 0.05)
FOLLOW_UP = "follow-up question"
SHARP_ARCH = "SharpQwen2_5_VLForConditionalGeneration"
STOCK_ARCH = "Qwen2_5_VLForConditionalGeneration"
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


# ---- hooks in the worker and the frontend ---------------------------------------------------
def _install_worker_timers(worker) -> None:
    """Time the vision tower and (ours) the black prior inside the worker."""
    import time as _time

    model = worker.model_runner.model
    model._bench_times = {"vision": [], "prior": []}

    def timed(name, function):
        def wrapper(*args, **kwargs):
            started = _time.perf_counter()
            result = function(*args, **kwargs)
            model._bench_times[name].append((_time.perf_counter() - started) * 1e3)
            return result

        return wrapper

    model._process_video_input = timed("vision", model._process_video_input)
    if hasattr(model, "_black_prior"):
        model._black_prior = timed("prior", model._black_prior)


def _sdpa_attention_before(q, k, v, scale, seen, out=None):
    """The scoring pass's attention before this change (commit f6c75e3): SDPA with an
    explicit mask, rows in blocks under a 256 MiB budget (about 2,000 rows here). Its
    arguments are today's (`seen`, `out`: scoring_pass._attention's); it reads only the
    rows' last visible columns, which is all a causal or block-causal mask needs."""
    import torch
    import torch.nn.functional as F

    from sharp_plugin.core.masks import attention_mask

    end = _ends(seen)
    seq_len = q.shape[1]
    step = max(1, (256 << 20) // (2 * 4 * q.shape[0] * seq_len))
    blocks = []
    for start in range(0, seq_len, step):
        stop = min(start + step, seq_len)
        reach = int(end[start:stop].max()) + 1
        mask = attention_mask(end[start:stop], reach, q.device)
        blocks.append(
            F.scaled_dot_product_attention(
                q[:, start:stop], k[:, :reach], v[:, :reach], attn_mask=mask, scale=scale, enable_gqa=True
            )
        )
    return _written(torch.cat(blocks, dim=1), out)


def _ends(seen):
    """The rows' last visible columns, from a Visibility (or such a tensor), on the host."""
    return (seen.end if hasattr(seen, "end") else seen).cpu()


def _written(result, out):
    """`result` ([H, L, d]) also written into `out` ([L, H, d]) when the caller gave one."""
    if out is not None:
        out.copy_(result.transpose(0, 1))
    return result


def _attention_after(worker) -> None:
    import sharp_plugin.vllm.scoring_pass as scoring_pass

    scoring_pass._attention = scoring_pass._saved_attention


def _float32_attention_before(q, k, v, scale, seen, out=None):
    """The scoring pass's attention before this change (commit 5893a04): the same row
    blocks, but in float32 and with a [rows, reach] mask per block (today's arguments,
    as in _sdpa_attention_before)."""
    import torch

    from sharp_plugin.core.masks import attention_mask
    from sharp_plugin.vllm.scoring_pass import _rows_per_block

    num_heads, seq_len, head_dim = q.shape
    num_kv_heads = k.shape[0]
    group = num_heads // num_kv_heads
    keys, values = k.float(), v.float()
    q_grouped = q.view(num_kv_heads, group, seq_len, head_dim)
    result = q.new_empty(num_kv_heads, group, seq_len, head_dim)
    end = _ends(seen)
    step = _rows_per_block(num_heads, seq_len)
    for start in range(0, seq_len, step):
        stop = min(start + step, seq_len)
        rows = stop - start
        reach = int(end[start:stop].max()) + 1
        block = q_grouped[:, :, start:stop].float().reshape(num_kv_heads, group * rows, head_dim)
        logits = torch.bmm(block, keys[:, :reach].transpose(1, 2)).mul_(scale)
        hidden = ~attention_mask(end[start:stop], reach, q.device)
        logits = logits.view(num_kv_heads, group, rows, reach).masked_fill_(hidden, float("-inf"))
        probs = logits.softmax(dim=-1).view(num_kv_heads, group * rows, reach)
        result[:, :, start:stop] = torch.bmm(probs, values[:, :reach]).view(
            num_kv_heads, group, rows, head_dim
        )
    return _written(result.view(num_heads, seq_len, head_dim), out)


def _swap_attention(replacement):
    def install(worker) -> None:
        import sharp_plugin.vllm.scoring_pass as scoring_pass

        scoring_pass._saved_attention = scoring_pass._attention
        scoring_pass._attention = replacement

    return install


# Each change to the scoring pass: (install the code before it, restore the current code).
BEFORE = {
    "SDPA attention (before)": (_swap_attention(_sdpa_attention_before), _attention_after),
    "float32 attention (before)": (_swap_attention(_float32_attention_before), _attention_after),
}


def _pop_worker_times(worker) -> dict:
    model = worker.model_runner.model
    times = model._bench_times
    model._bench_times = {"vision": [], "prior": []}
    return times


class ProcessorTimer:
    """Wall time of the multimodal processor in this (frontend) process."""

    def __init__(self):
        from vllm.multimodal.processing import BaseMultiModalProcessor

        self.total_ms = 0.0
        original = BaseMultiModalProcessor.apply
        timer = self

        def apply(self, *args, **kwargs):
            started = time.perf_counter()
            try:
                return original(self, *args, **kwargs)
            finally:
                timer.total_ms += (time.perf_counter() - started) * 1e3

        BaseMultiModalProcessor.apply = apply

    def pop(self) -> float:
        value, self.total_ms = self.total_ms, 0.0
        return value


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
        report_id = None
        if sharp is not None:
            report_id = uuid.uuid4().hex
            request["mm_processor_kwargs"] = {"sharp": {**sharp, "report_id": report_id}}
        # Prompt tokens besides the video's: the question's length varies per request.
        self.text_tokens = len(self.tokenizer.encode(prompt, add_special_tokens=False)) - 1
        return request, report_id


def make_engine(model_dir: Path, architecture: str, **engine_args):
    from vllm import LLM

    from sharp_plugin import WORKER_EXTENSION

    extra = {"worker_extension_cls": WORKER_EXTENSION} if architecture == SHARP_ARCH else {}
    # The processor cache stays on (vLLM's default), on both engines: with it and prefix
    # caching both off, vLLM skips content hashing and gives every item a per-request id,
    # so no cache can recognise a video (the follow-up arm needs that). Every other
    # request sends a new video, so it serves none of them.
    return LLM(
        model=str(model_dir), dtype="bfloat16", max_model_len=4400, max_num_seqs=1, enforce_eager=True,
        enable_prefix_caching=False, mm_processor_cache_gb=1, limit_mm_per_prompt={"video": 1},
        hf_overrides={"architectures": [architecture]}, seed=0, **extra, **engine_args,
    )  # fmt: skip


def run_once(
    llm, requests: Requests, processor: ProcessorTimer, sharp: dict | None, same_video: bool = False
) -> dict:
    from vllm import SamplingParams

    from sharp_plugin.vllm.reports import FRONTEND_RECORDS, join_report, merge_replies

    request, report_id = requests.next(sharp, same_video)
    llm.collective_rpc(_pop_worker_times)
    processor.pop()
    started = time.perf_counter()
    (output,) = llm.generate([request], SamplingParams(max_tokens=1, temperature=0.0), use_tqdm=False)
    ttft = (time.perf_counter() - started) * 1e3
    (times,) = llm.collective_rpc(_pop_worker_times)
    row = {
        "ttft_ms": ttft,
        "processor_ms": processor.pop(),
        "vision_ms": sum(times["vision"]),
        "prior_ms": sum(times["prior"]),
        "prompt_tokens": len(output.prompt_token_ids),
        "text_tokens": requests.text_tokens,
        "scoring_ms": 0.0,
    }
    if report_id is not None:
        record = FRONTEND_RECORDS.pop(report_id)
        replies = llm.collective_rpc("sharp_reports", args=([item["mm_hash"] for item in record],))
        (report,) = join_report(record, merge_replies(replies))
        row["video_tokens"], row["kept"] = report["video_tokens"], report["video_tokens_kept"]
        row["prior"] = report["prior"]
        # The report's scoring time includes the prior; keep the two apart.
        row["scoring_ms"] = (report["scoring_ms"] or 0.0) - row["prior_ms"]
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
        for change in BEFORE:  # each change to the scoring pass, before and after, in this run
            out.append(("ours", f"sharp K=2, {change}", {"retention": 0.1, "prune_layer": 2}))
            out.append(("ours", f"fastv, {change}", {"method": "fastv", "retention": 0.1}))
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
    parser.add_argument("--small", action="store_true", help="CI mode: 1 repeat, r = 0.1, no EVS")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
    os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")  # the timing hooks
    retentions = (0.1,) if args.small else RETENTIONS
    repeats = 1 if args.small else args.repeats
    out = args.out or (REPO / ("runs/prefill-small" if args.small else "bench/results"))
    out.mkdir(parents=True, exist_ok=True)

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

    import sharp_plugin

    sharp_plugin.register()
    processor = ProcessorTimer()
    engines = {"ours": make_engine(model_dir, SHARP_ARCH), "stock": make_engine(model_dir, STOCK_ARCH)}
    for llm in engines.values():
        llm.collective_rpc(_install_worker_timers)
    requests = Requests(engines["ours"].get_tokenizer())
    plan = arms(retentions)
    samples: dict[str, list[dict]] = {}
    run_once(engines["ours"], requests, processor, {"retention": 0.1})  # warm-up, both engines
    run_once(engines["stock"], requests, processor, None)
    for repeat in range(repeats):
        for engine, name, settings in plan:
            key = json.dumps([name, settings], sort_keys=True)
            change = next((c for c in BEFORE if name.endswith(c)), None)
            if change:
                engines[engine].collective_rpc(BEFORE[change][0])
            try:
                follow_up = name.endswith(FOLLOW_UP)
                row = run_once(engines[engine], requests, processor, settings, same_video=follow_up)
                samples.setdefault(key, []).append(row)
            finally:
                if change:
                    engines[engine].collective_rpc(BEFORE[change][1])
            print(f"repeat {repeat + 1}/{repeats}: {name} {settings or ''} done", file=sys.stderr)
    for llm in engines.values():
        llm.llm_engine.engine_core.shutdown()
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
            llm = make_engine(model_dir, STOCK_ARCH, video_pruning_rate=1 - retention)
            llm.collective_rpc(_install_worker_timers)
            run_once(llm, requests, processor, None)  # warm-up
            runs = [run_once(llm, requests, processor, None) for _ in range(repeats)]
            llm.llm_engine.engine_core.shutdown()
            del llm
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
    (out / ("prefill-small.json" if args.small else "prefill.json")).write_text(json.dumps(result, indent=1))
    plot(rows, out / ("prefill-small.png" if args.small else "prefill.png"))
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
