"""The first GPU run: prefill by stage and throughput at concurrency 8, on random-weight
models at the real configurations, within minutes, with no network.

    scripts/gpu_bench.sh                 # one 80 GB GPU, at most 8 minutes
    scripts/gpu_bench.sh --tiny          # CI: tiny shapes on the CPU, every step but the device

What it needs: this repository, and a Python with vLLM 0.32 and this project (the Docker
image's, or the install script's). No model hub: the models are Qwen2.5-VL-7B's and
Qwen3-VL-8B's own config.json (bench/data/model_configs), served with random weights
(`load_format: dummy`; speed does not depend on the weights) and a tokenizer built here.

Stages, most important first, each run only when the time left covers its estimate:
for each model, the stock engine stays up while ours, then vLLM's EVS at 0.25, then at
0.1 come up beside it (two engines at a time fit one GPU); every arm runs at about 4k and
16k video tokens, interleaved with stock over rounds (bench/prefill.py's measurement:
TTFT by stage, ratios with intervals); then requests per second at concurrency 8 (24
requests through `max_num_seqs` 8). The V1 model runner and CUDA graphs are as the
server configures them (the recipe's runner pin; not eager). Each finished stage is
written at once to bench/results/gpu/<model>.json, so a run stopped by time, memory or an
error leaves its partial results, and says which stage stopped it and why. Last, if time
is left, the decode stage (bench/gpu_decode.py): decord2 on the GPU and torchcodec on
CUDA against the server's CPU decode, in bench/results/gpu/decode.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

from bench import flops
from bench.common.engines import ProcessorProbe, install_stage_probes, shutdown
from bench.common.models import LOAD_DUMMY, real_config, text_of, write_model
from bench.common.results import REPO, provenance
from bench.common.shapes import matched_config, shape_summary
from bench.common.stats import median_with_interval, ratio
from bench.gpu_decode import decode_stage
from bench.prefill import EVS_BROKEN, Arm, Videos, run_once, summarise, targets
from sharp_plugin import recipe

SOURCES = ["sharp_plugin", "bench/gpu.py", "bench/prefill.py", "bench/common"]
MODELS = {
    "qwen2.5-vl-7b": ("qwen2_5_vl_7b", 448),
    "qwen3-vl-8b": ("qwen3_vl_8b", 512),
}  # name -> config, side
LENGTHS = {"4k": 32, "16k": 128}  # frames at the model's side: 4,096 and 16,384 video tokens
# Seconds a stage takes on an H100-class GPU (a 7B prefill of 16k tokens is about 1.5 s;
# a stage is warm-up, the rounds and the req/s runs), and on the CPU in tiny mode.
STAGE_ESTIMATE_S = {"4k": 45, "16k": 150, "tiny": 10}
MISS = {"retention": 0.1, "prior_query": "question"}
ARMS = {
    "ours": [Arm("ours, none", "ours", {"method": "none"}), Arm("sharp r=0.25", "ours", {"retention": 0.25}),
             Arm("sharp r=0.1", "ours", {"retention": 0.1}),
             Arm("sharp r=0.1, prior miss", "ours", MISS, prior="miss")],
    "evs-0.25": [Arm("EVS r=0.25", "evs-0.25")],
    "evs-0.1": [Arm("EVS r=0.1", "evs-0.1")],
}  # fmt: skip
THROUGHPUT_REQUESTS, CONCURRENCY = 24, 8
# --tiny rehearses each kind of step once: one length, one EVS engine (the other rate is
# the same step with another number), fewer requests per req/s run. CI's time is spent
# on what could break, not on repeats of it.
TINY_LENGTHS, TINY_SKIPS, TINY_THROUGHPUT_REQUESTS = {"tiny": 8}, ("evs-0.1",), 8
DECODE_ESTIMATE_S = 30  # bench/gpu_decode.py: 5 rounds of 32 frames of a 60 s 720p clip, with its encoding


class Budget:
    """The run's deadline, and what the device has left."""

    def __init__(self, seconds: float, tiny: bool):
        self.deadline, self.tiny = time.monotonic() + seconds, tiny

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def check(self, stage: str, estimate_s: float, memory_gb: float = 0.0) -> str | None:
        """Why `stage` cannot start now, or None."""
        if self.left() < estimate_s:
            return f"{self.left():.0f} s left, {stage} needs about {estimate_s:.0f} s"
        if not self.tiny and memory_gb:
            import torch

            free = torch.cuda.mem_get_info()[0] / 2**30
            if free < memory_gb:
                return f"{free:.1f} GiB free on the device, {stage} needs about {memory_gb:.0f} GiB"
        return None


def device() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"kind": "cpu", "name": "no GPU (tiny mode)"}
    free, total = torch.cuda.mem_get_info()
    return {
        "kind": "cuda",
        "name": torch.cuda.get_device_name(0),
        "total_gb": total / 2**30,
        "free_gb": free / 2**30,
    }


def model_config(name: str, tiny: bool) -> dict:
    if not tiny:
        return real_config(MODELS[name][0])
    # A narrow shape of the same family, cut to 4 text layers (the scoring layer, K = 2,
    # must be below the last) and a 2-block tower.
    config = matched_config(name)
    text_of(config)["num_hidden_layers"] = 4
    config["vision_config"]["depth"] = 2
    config["vision_config"].pop("fullatt_block_indexes", None)
    config["vision_config"].pop("deepstack_visual_indexes", None)
    if config["model_type"] == "qwen2_5_vl":
        config["vision_config"]["fullatt_block_indexes"] = [1]
    else:
        config["vision_config"]["deepstack_visual_indexes"] = [0]
    return config


def engine(model_dir: Path, name: str, tiny: bool, context: int):
    from vllm import LLM

    args = {
        "max_model_len": context, "max_num_seqs": CONCURRENCY, "enable_prefix_caching": False,
        "mm_processor_cache_gb": 1, "limit_mm_per_prompt": {"video": 1, "image": 0}, "dtype": "bfloat16",
        # Two engines share the device: the stock one stays up beside each other arm's.
        "enforce_eager": tiny, "seed": 0, **LOAD_DUMMY, **({} if tiny else {"gpu_memory_utilization": 0.42}),
    }  # fmt: skip
    if name.startswith("evs-"):
        args["video_pruning_rate"] = round(1 - float(name[4:]), 6)
    engine_args = recipe.engine_args(model_dir, sharp=name == "ours", **args)
    recipe.pin_model_runner()
    llm = LLM(**engine_args)
    llm.collective_rpc(install_stage_probes)
    return llm


def throughput(llm, videos: Videos, arm: Arm, count: int) -> float:
    """Requests per second of `count` new videos, CONCURRENCY at a time."""
    from vllm import SamplingParams

    requests = [videos.request(arm)[0] for _ in range(count)]
    started = time.perf_counter()
    llm.generate(requests, SamplingParams(max_tokens=16, ignore_eos=True, temperature=0.0), use_tqdm=False)
    return count / (time.perf_counter() - started)


class _Shape:
    def __init__(self, name: str, config: dict, frames: int, side: int):
        self.name, self.config, self.frames, self.side = name, config, frames, side


def run_model(name: str, args, budget: Budget, out: Path) -> None:
    config = model_config(name, args.tiny)
    side = 112 if args.tiny else MODELS[name][1]
    lengths = TINY_LENGTHS if args.tiny else LENGTHS
    cost = flops.Model.load(name, config)
    context = cost.vision.tokens(flops.VideoShape(max(lengths.values()), side, side)) + 256
    directory = REPO / "runs" / "bench-models" / f"gpu-{name}{'-tiny' if args.tiny else ''}"
    model_dir = write_model(directory, config, max_pixels=side * side, context=context)
    result = {
        "provenance": provenance(SOURCES), "device": device(), "model": name, "tiny": args.tiny,
        "config": config, "rounds": args.rounds, "stages": {}, "not_run": {}, "stopped": None,
    }  # fmt: skip
    if not args.tiny:
        result["shape"] = shape_summary(config, name)
    path = out / f"{name}.json"

    def save() -> None:
        path.write_text(json.dumps(result, indent=1) + "\n")

    def stop(reason: str) -> None:
        result["stopped"] = reason
        save()
        print(f"{name}: stopped: {reason}", file=sys.stderr)

    processor = ProcessorProbe()
    weights_gb = 0.0 if args.tiny else 17.0  # a 7-8B model in bf16, with its CUDA context
    start_estimate = 60 if args.tiny else 120
    with contextlib.ExitStack() as engines_up:
        try:
            if reason := budget.check("the stock engine", start_estimate, weights_gb):
                return stop(reason)
            stock = engine(model_dir, "stock", args.tiny, context)
            engines_up.callback(shutdown, stock)
            for other, arms in ARMS.items():
                if args.tiny and other in TINY_SKIPS:
                    continue
                if other.startswith("evs-") and name in EVS_BROKEN:
                    result["not_run"][other] = EVS_BROKEN[name]
                    continue
                if reason := budget.check(f"the {other} engine", start_estimate * 2, weights_gb):
                    return stop(reason)
                llm = engine(model_dir, other, args.tiny, context)
                engines = {"stock": stock, other: llm}
                for length, frames in lengths.items():
                    stage = f"{other}, {length}"
                    if reason := budget.check(stage, STAGE_ESTIMATE_S[length]):
                        shutdown(llm)
                        return stop(reason)
                    shape = _Shape(name, config, frames, side)
                    requests = TINY_THROUGHPUT_REQUESTS if args.tiny else THROUGHPUT_REQUESTS
                    result["stages"][stage] = measure_stage(
                        engines, arms, shape, processor, args.rounds, requests
                    )
                    save()
                    print(f"{name}: {stage} done, {budget.left():.0f} s left", file=sys.stderr)
                shutdown(llm)
        except Exception as exc:  # a partial result says what stopped it
            return stop(f"{type(exc).__name__}: {str(exc)[:300]}")
    save()


def measure_stage(
    engines: dict, arms: list[Arm], shape: _Shape, processor, rounds: int, throughput_requests: int
) -> dict:
    """TTFT by stage for stock and each arm, round-robin over `rounds` (the order rotated
    each round), then req/s at CONCURRENCY for each (`throughput_requests` a run),
    interleaved too."""
    videos = Videos(shape.frames, shape.side)
    units = [[Arm("stock", "stock")]] + [[arm] for arm in arms]
    for unit in units:  # warm-up
        run_once(engines[unit[0].engine], videos, processor, unit[0])
    samples: dict[str, list] = {unit[0].name: [] for unit in units}
    for index in range(rounds):
        for unit in units[index % len(units) :] + units[: index % len(units)]:
            samples[unit[0].name].append(run_once(engines[unit[0].engine], videos, processor, unit[0]))
    arms_summary = summarise(shape, units, samples)
    rates: dict[str, list[float]] = {unit[0].name: [] for unit in units}
    for _ in range(max(1, rounds // 2)):
        for unit in units:
            rates[unit[0].name].append(
                throughput(engines[unit[0].engine], videos, unit[0], throughput_requests)
            )
    stock = rates.pop("stock")
    return {
        "frames": shape.frames, "side": shape.side, "arms": arms_summary,
        "targets": targets(arms_summary) if "ours" in engines else {},
        "req_s": {"stock": median_with_interval(stock)}
        | {arm: median_with_interval(values) for arm, values in rates.items()},
        "req_s_ratio_to_stock": {arm: ratio(values, stock) for arm, values in rates.items()},
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tiny", action="store_true", help="tiny shapes on the CPU: every step but the device"
    )
    parser.add_argument("--minutes", type=float, default=8.0, help="the whole run's time budget")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "gpu")
    args = parser.parse_args()
    budget = Budget(args.minutes * 60, args.tiny)
    if not args.tiny and device()["kind"] != "cuda":
        print("no CUDA device: run with --tiny for the CPU rehearsal", file=sys.stderr)
        return 2
    if args.tiny:
        args.rounds = min(args.rounds, 2)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        run_model(name, args, budget, args.out)
    # Last, as the least important: does decoding on the GPU beat the server's CPU decode?
    if reason := budget.check("the decode stage", DECODE_ESTIMATE_S):
        print(f"decode: not run: {reason}", file=sys.stderr)
    else:
        decode_stage(args.out, tiny=args.tiny, rounds=max(args.rounds, 5))
    return 0


if __name__ == "__main__":
    sys.exit(main())
