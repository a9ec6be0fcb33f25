"""Throughput and tail latency under load, side by side with stock vLLM, measured by the
peer's own load client (`vllm bench serve`, openai-chat backend, ShareGPT-style dataset
of real mp4 clips).

Usage: python -m bench.load [--prompts 16] [--small]
Model: the 28-layer bench model of bench/prefill.py (random weights; Qwen2.5-VL-7B's
depth and vision/LM cost ratio). Clips: 16 frames at 2 fps of 336x336, so both servers
sample all 16 frames (N = 1152 video tokens); every request gets a clip no earlier
request used, so no cache of either server serves it. Outputs are a fixed length
(--ignore-eos).
Arms:
- ours (`python -m server`): pruning off, ShaRP at r = 0.25 and r = 0.1 (per request,
  through `--extra-body`);
- stock `vllm serve` on the same model: unpruned, and vLLM's EVS at 0.25 and 0.1
  (`--video-pruning-rate`, one server per rate);
- each at concurrency 1, 4 and 8;
- ours, long decodes (96 tokens) at concurrency 8: how much new videos' prefills (and
  the scoring pass) stall the streams already running (ITL p99);
- ours, mixed clip lengths (8, 16 and 32 frames at 2 fps) at concurrency 8.
Writes bench/results/load.{json,md,png} (--small: runs/load-small, two arms, 4 prompts).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import yaml

from bench import prefill
from bench.common.engines import configure_environment
from bench.common.results import REPO, add_output_arguments, output_dir, write_report
from bench.common.servers import ServerProcess, free_port, ours_command, vllm_command
from sharp_plugin import recipe

SOURCES = ["server", "sharp_plugin", "bench/load.py", "bench/prefill.py"]

FRAMES, SIDE, FPS = 16, 336, 2
OUTPUT_TOKENS, LONG_OUTPUT_TOKENS = 16, 96
SERVED_NAME = "bench"
QUESTIONS = [
    "What happens in this video clip?", "Which colour is the moving square?",
    "Where does the square end up at the end?", "Describe the motion you can see here.",
]  # fmt: skip


def write_clip(path: Path, seed: int, frames: int = FRAMES) -> Path:
    """A smooth gradient with a moving square: real H.264, small files, distinct per seed."""
    rng = np.random.RandomState(seed)
    base = rng.randint(0, 255, size=3)
    ramp = np.linspace(0, 80, SIDE, dtype=np.float32)
    background = np.clip(base[None, None, :] + ramp[:, None, None] + ramp[None, :, None], 0, 255)
    colour = rng.randint(0, 255, size=3)
    x, y = rng.randint(0, SIDE - 64, size=2)
    dx, dy = rng.randint(-8, 9, size=2)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width = stream.height = SIDE
        stream.pix_fmt = "yuv420p"
        for t in range(frames):
            frame = background.copy()
            left, top = (x + dx * t) % (SIDE - 64), (y + dy * t) % (SIDE - 64)
            frame[top : top + 64, left : left + 64] = colour
            image = av.VideoFrame.from_ndarray(frame.astype(np.uint8), format="rgb24")
            container.mux(stream.encode(image))
        container.mux(stream.encode())
    return path


class Clips:
    """Distinct clips on demand: every dataset gets clips no other dataset used."""

    def __init__(self, directory: Path):
        self.directory, self.seed = directory, 0
        directory.mkdir(parents=True, exist_ok=True)

    def dataset(self, count: int, frames: list[int] | None = None) -> Path:
        entries = []
        for index in range(count):
            self.seed += 1
            length = (frames or [FRAMES])[index % len(frames or [FRAMES])]
            clip = write_clip(self.directory / f"clip-{self.seed}.mp4", self.seed, length)
            question = QUESTIONS[index % len(QUESTIONS)]
            entries.append(
                {
                    "id": str(self.seed),
                    "video": str(clip),
                    "conversations": [
                        {"from": "human", "value": question},
                        {"from": "gpt", "value": "A square."},
                    ],
                }
            )
        path = self.directory / f"dataset-{self.seed}.json"
        path.write_text(json.dumps(entries))
        return path


# ---- servers ----------------------------------------------------------------------------------
def start_ours(model_dir: Path, media_root: Path, runs: Path) -> ServerProcess:
    config = yaml.safe_load((REPO / "configs/default.yaml").read_text())
    config["engine"].update(
        model=str(model_dir), served_model_name=SERVED_NAME, max_model_len=4400, max_num_seqs=8
    )
    config["media"].update(max_frames=32, default_fps=float(FPS), max_frame_pixels=SIDE * SIDE)
    config["security"]["allowed_local_root"] = str(media_root)
    path = runs / "ours.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    return ServerProcess(ours_command(path, port), port, runs / "ours.log", name="ours").start()


def start_stock(model_dir: Path, media_root: Path, runs: Path, evs_retention: float | None) -> ServerProcess:
    engine = {
        "served_model_name": SERVED_NAME, "dtype": "bfloat16", "max_model_len": 4400, "max_num_seqs": 8,
        "enforce_eager": True, "limit_mm_per_prompt": {"video": 1, "image": 0},
    }  # fmt: skip
    if evs_retention is not None:
        engine["video_pruning_rate"] = round(1 - evs_retention, 6)
    port = free_port()
    extra = [
        "--port", str(port), "--host", "127.0.0.1", "--allowed-local-media-path", str(media_root),
        # The same frames our server samples: all of each clip, at its 2 fps.
        "--media-io-kwargs", json.dumps({"video": {"fps": FPS, "num_frames": -1}}),
    ]  # fmt: skip
    command = vllm_command(
        recipe.vllm_serve_command(recipe.engine_args(model_dir, sharp=False, **engine), extra)
    )
    name = "stock" if evs_retention is None else f"stock-evs-{evs_retention}"
    return ServerProcess(command, port, runs / f"{name}.log", name=name).start()


# ---- the load client ----------------------------------------------------------------------------
def bench_serve(server: ServerProcess, model_dir: Path, dataset: Path, *, concurrency: int, prompts: int,
                output_tokens: int, extra_body: dict | None, out: Path) -> dict:  # fmt: skip
    result = out / f"{server.name}-{time.monotonic_ns()}.json"
    command = [
        str(Path(sys.executable).with_name("vllm")), "bench", "serve",
        "--backend", "openai-chat", "--endpoint", "/v1/chat/completions",
        "--base-url", f"http://127.0.0.1:{server.port}",
        "--model", SERVED_NAME, "--tokenizer", str(model_dir),
        "--dataset-name", "sharegpt", "--dataset-path", str(dataset), "--num-prompts", str(prompts),
        "--sharegpt-output-len", str(output_tokens), "--ignore-eos", "--max-concurrency", str(concurrency),
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99", "--disable-tqdm",
        "--save-result", "--result-dir", str(out), "--result-filename", result.name, "--seed", "0",
    ]  # fmt: skip
    if extra_body:
        command += ["--extra-body", json.dumps(extra_body)]
    run = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=3600)
    if run.returncode != 0 or not result.exists():
        raise RuntimeError(f"vllm bench serve failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    raw = json.loads(result.read_text())
    if raw["completed"] != prompts:  # recorded, not hidden: the report shows failed arms
        print(f"{server.name}: {raw['completed']} of {prompts} requests completed", file=sys.stderr)
    return {
        "req_s": raw["request_throughput"],
        "ttft_p50_ms": raw["p50_ttft_ms"],
        "ttft_p99_ms": raw["p99_ttft_ms"],
        "itl_p50_ms": raw["p50_itl_ms"],
        # Per request, (end-to-end - TTFT) / (tokens - 1): unlike ITL, it does not depend
        # on how a server groups tokens into stream chunks.
        "tpot_p50_ms": raw["p50_tpot_ms"],
        "itl_p99_ms": raw["p99_itl_ms"],
        "e2el_p50_ms": raw["p50_e2el_ms"],
        "completed": raw["completed"],
        "failed": prompts - raw["completed"],
        "input_tokens": raw["total_input_tokens"],
        "output_tokens": output_tokens,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16, help="requests per run")
    add_output_arguments(parser)  # --small: ours off/r=0.25 and stock, 4 prompts
    args = parser.parse_args()
    configure_environment()
    out = output_dir(args, "load")
    runs = REPO / ("runs/load-small" if args.small else "runs/load")
    runs.mkdir(parents=True, exist_ok=True)
    prompts = 4 if args.small else args.prompts
    concurrencies = (2,) if args.small else (1, 4, 8)
    model_dir = prefill.build_bench_model(REPO / "runs/bench-models/prefill-28l")
    clips = Clips(runs / "clips")
    ours_arms = [("none", 1.0, {"method": "none"}), ("sharp", 0.25, {"retention": 0.25})]
    stock_arms = [None] if args.small else [None, 0.25, 0.1]
    if not args.small:
        ours_arms.append(("sharp", 0.1, {"retention": 0.1}))

    rows: list[dict] = []

    def record(server, method, retention, concurrency, run, **extra):
        row = {"server": server, "method": method, "retention": retention, "concurrency": concurrency,
               "run": run, **extra}  # fmt: skip
        rows.append(row)
        print(
            f"{server:5} {method:6} r={retention:<5} c={concurrency} {run:13} {row['req_s']:.3f} req/s  "
            f"TTFT p50 {row['ttft_p50_ms']:.0f} p99 {row['ttft_p99_ms']:.0f}  "
            f"ITL p99 {row['itl_p99_ms']:.0f} ms",
            file=sys.stderr,
        )

    def warm_up(server: ServerProcess, extra_body: dict | None) -> None:
        """A few discarded requests after each start: the first requests on a fresh engine
        pay one-time costs (kernel selection for new shapes, the generic prior), which
        would otherwise land on whichever arm happens to run first."""
        if not args.small:
            bench_serve(
                server, model_dir, clips.dataset(4), concurrency=1, prompts=4,
                output_tokens=OUTPUT_TOKENS, extra_body=extra_body, out=runs,
            )  # fmt: skip

    ours = start_ours(model_dir, clips.directory, runs)
    try:
        warm_up(ours, {"sharp": {"retention": 0.25}})
        for concurrency in concurrencies:
            for method, retention, sharp in ours_arms:
                dataset = clips.dataset(prompts)
                measured = bench_serve(
                    ours, model_dir, dataset, concurrency=concurrency, prompts=prompts,
                    output_tokens=OUTPUT_TOKENS, extra_body={"sharp": sharp}, out=runs,
                )  # fmt: skip
                record("ours", method, retention, concurrency, "grid", **measured)
        if not args.small:
            for run, frames, output in (
                ("long decodes", None, LONG_OUTPUT_TOKENS),
                ("mixed lengths", [8, 16, 32], 16),
            ):
                for method, retention, sharp in ours_arms[:2]:
                    dataset = clips.dataset(prompts, frames)
                    measured = bench_serve(
                        ours, model_dir, dataset, concurrency=8, prompts=prompts,
                        output_tokens=output, extra_body={"sharp": sharp}, out=runs,
                    )  # fmt: skip
                    record("ours", method, retention, 8, run, **measured)
    finally:
        ours.stop()
    for evs_retention in stock_arms:
        stock = start_stock(model_dir, clips.directory, runs, evs_retention)
        try:
            warm_up(stock, None)
            for concurrency in concurrencies:
                if not stock.alive():  # its engine died in the previous run: start afresh
                    stock.stop()
                    stock = start_stock(model_dir, clips.directory, runs, evs_retention)
                dataset = clips.dataset(prompts)
                measured = bench_serve(
                    stock, model_dir, dataset, concurrency=concurrency, prompts=prompts,
                    output_tokens=OUTPUT_TOKENS, extra_body=None, out=runs,
                )  # fmt: skip
                method = "none" if evs_retention is None else "evs"
                record("stock", method, evs_retention or 1.0, concurrency, "grid", **measured)
        finally:
            stock.stop()
    report(rows, out, args, prompts)


def report(rows: list[dict], out: Path, args, prompts: int) -> None:
    lines = [
        "| server | method | r | concurrency | run | req/s | TTFT p50 | TTFT p99 | ITL p50 | ITL p99 "
        "| TPOT p50 (ms) | failed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['server']} | {r['method']} | {r['retention']} | {r['concurrency']} | {r['run']} | "
            f"{r['req_s']:.3f} | {r['ttft_p50_ms']:.0f} | {r['ttft_p99_ms']:.0f} | {r['itl_p50_ms']:.1f} | "
            f"{r['itl_p99_ms']:.1f} | {r['tpot_p50_ms']:.1f} | "
            f"{r['failed']} |"
        )
    table = "\n".join(lines)
    setup = {
        "frames": FRAMES,
        "side": SIDE,
        "fps": FPS,
        "prompts_per_run": prompts,
        "output_tokens": OUTPUT_TOKENS,
    }
    write_report(
        out,
        "load",
        {"setup": setup, "rows": rows},
        lambda _: f"# Load: `vllm bench serve` against our server and stock vLLM\n\n{table}\n",
        lambda result, path: plot(result["rows"], path),
        sources=SOURCES,
    )


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rate, ax_ttft) = plt.subplots(1, 2, figsize=(11, 4))
    arms = sorted({(r["server"], r["method"], r["retention"]) for r in rows if r["run"] == "grid"})
    for server, method, retention in arms:
        points = sorted(
            (r["concurrency"], r["req_s"], r["ttft_p99_ms"])
            for r in rows
            if r["run"] == "grid"
            and (r["server"], r["method"], r["retention"]) == (server, method, retention)
        )
        label = f"{server} {method}" + ("" if retention == 1.0 else f" r={retention}")
        style = "-o" if server == "ours" else "--s"
        ax_rate.plot([p[0] for p in points], [p[1] for p in points], style, label=label)
        ax_ttft.plot([p[0] for p in points], [p[2] / 1e3 for p in points], style, label=label)
    ax_rate.set(xlabel="concurrency", ylabel="requests / s", title="throughput")
    ax_ttft.set(xlabel="concurrency", ylabel="TTFT p99 (s)", title="tail TTFT")
    ax_rate.legend(fontsize=8)
    fig.suptitle(f"vllm bench serve, 28-layer bench model, {FRAMES} frames of {SIDE}², CPU")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
