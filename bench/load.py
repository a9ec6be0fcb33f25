"""Throughput and latency under load, our server against stock `vllm serve`, measured by
the peer's own load client (`vllm bench serve`, openai-chat backend, a ShareGPT-style
dataset of real mp4 clips), the servers alternating over rounds.

    python -m bench.load [--rounds 3] [--prompts 16]
    python -m bench.load --small    # CI: a 4-layer shape, ours off/r=0.25 and stock, 1 round

The model: the shape matched to Qwen2.5-VL-7B (bench/common/shapes.py: 28 layers, its
attention share and vision/LM FLOPs ratio), random weights. Clips: 16 frames at 2 fps of
336x336 (N = 1152 video tokens); every request gets a clip no earlier request used, so no
cache of either server serves it. Outputs are a fixed length (--ignore-eos).

Servers: ours (`python -m server`) with pruning off, ShaRP r = 0.25 and r = 0.1 (per
request, `--extra-body`); stock `vllm serve` on the same model, unpruned, and with vLLM's
EVS at 0.25 and 0.1 (`--video-pruning-rate`, one server per rate). Both servers get the
same frames: all of each clip, at its 2 fps. Each round starts every server afresh and
runs its arms (ours first in even rounds, stock first in odd ones), so a ratio is taken
per round, between runs minutes apart, and reported as a median with a 95% bootstrap
interval over rounds. Each server run: closed loop at concurrency 8 (`waves`: requests
start together), and Poisson arrivals at a fixed rate with longer outputs (`poisson`:
new videos arrive while others decode). Percentiles are computed over every round's
requests together, and only as far as the sample supports: p99 from 100 values, p90 from
10, else the maximum (bench/common/stats.py).
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

from bench.common.engines import configure_environment
from bench.common.models import LOAD_DUMMY, text_of, write_model
from bench.common.results import REPO, add_output_arguments, output_dir, write_report
from bench.common.servers import ServerProcess, free_port, ours_command, vllm_command
from bench.common.shapes import matched_config, shape_summary
from bench.common.stats import median_with_interval, met, percentile_label, ratio
from sharp_plugin import recipe

SOURCES = ["server", "sharp_plugin", "bench/load.py", "bench/common"]
FRAMES, SIDE, FPS = 16, 336, 2
SERVED_NAME = "bench"
CONCURRENCY = 8
WAVE_TOKENS, POISSON_TOKENS, POISSON_RATE = 16, 64, 0.4  # output tokens; requests per second
QUESTIONS = [
    "What happens in this video clip?", "Which colour is the moving square?",
    "Where does the square end up at the end?", "Describe the motion you can see here.",
]  # fmt: skip
OURS = {
    "ours, off": {"method": "none"},
    "ours, sharp r=0.25": {"retention": 0.25},
    "ours, sharp r=0.1": {"retention": 0.1},
}
STOCK = {"stock": None, "stock EVS r=0.25": 0.25, "stock EVS r=0.1": 0.1}  # name -> EVS retention


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

    def dataset(self, count: int) -> Path:
        entries = []
        for index in range(count):
            self.seed += 1
            clip = write_clip(self.directory / f"clip-{self.seed}.mp4", self.seed)
            conversation = [{"from": "human", "value": QUESTIONS[index % len(QUESTIONS)]},
                            {"from": "gpt", "value": "A square."}]  # fmt: skip
            entries.append({"id": str(self.seed), "video": str(clip), "conversations": conversation})
        path = self.directory / f"dataset-{self.seed}.json"
        path.write_text(json.dumps(entries))
        return path


# ---- servers ---------------------------------------------------------------------------------
def start_ours(model_dir: Path, media_root: Path, runs: Path) -> ServerProcess:
    config = yaml.safe_load((REPO / "configs/default.yaml").read_text())
    config["engine"].update(
        model=str(model_dir), served_model_name=SERVED_NAME, max_model_len=4400, max_num_seqs=8,
        extra_engine_args=LOAD_DUMMY,
    )  # fmt: skip
    config["media"].update(max_frames=32, default_fps=float(FPS), max_frame_pixels=SIDE * SIDE)
    config["security"]["allowed_local_root"] = str(media_root)
    path = runs / "ours.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    return ServerProcess(ours_command(path, port), port, runs / "ours.log", name="ours").start()


def start_stock(model_dir: Path, media_root: Path, runs: Path, name: str, evs: float | None) -> ServerProcess:
    engine = {
        "served_model_name": SERVED_NAME, "dtype": "bfloat16", "max_model_len": 4400, "max_num_seqs": 8,
        "enforce_eager": True, "limit_mm_per_prompt": {"video": 1, "image": 0}, **LOAD_DUMMY,
    }  # fmt: skip
    if evs is not None:
        engine["video_pruning_rate"] = round(1 - evs, 6)
    port = free_port()
    extra = [
        "--port", str(port), "--host", "127.0.0.1", "--allowed-local-media-path", str(media_root),
        # The frames ours samples: all of each clip, at its 2 fps.
        "--media-io-kwargs", json.dumps({"video": {"fps": FPS, "num_frames": -1}}),
    ]  # fmt: skip
    args = recipe.engine_args(model_dir, sharp=False, **engine)
    command = vllm_command(recipe.vllm_serve_command(args, extra))
    log = runs / f"{name.replace(' ', '-').replace('=', '')}.log"
    return ServerProcess(command, port, log, name=name).start()


# ---- the load client ------------------------------------------------------------------------
def bench_serve(server: ServerProcess, model_dir: Path, dataset: Path, prompts: int, *, poisson: bool,
                extra_body: dict | None, runs: Path) -> dict:  # fmt: skip
    result = runs / f"{time.monotonic_ns()}.json"
    tokens = POISSON_TOKENS if poisson else WAVE_TOKENS
    command = vllm_command([
        "vllm", "bench", "serve", "--backend", "openai-chat", "--endpoint", "/v1/chat/completions",
        "--base-url", server.base_url, "--model", SERVED_NAME, "--tokenizer", str(model_dir),
        "--dataset-name", "sharegpt", "--dataset-path", str(dataset), "--num-prompts", str(prompts),
        "--sharegpt-output-len", str(tokens), "--ignore-eos", "--max-concurrency", str(CONCURRENCY),
        "--request-rate", str(POISSON_RATE) if poisson else "inf", "--burstiness", "1.0",
        "--disable-tqdm", "--save-result", "--save-detailed", "--result-dir", str(runs),
        "--result-filename", result.name, "--seed", "0",
    ])  # fmt: skip
    if extra_body:
        command += ["--extra-body", json.dumps(extra_body)]
    run = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=3600)
    if run.returncode != 0 or not result.exists():
        raise RuntimeError(f"vllm bench serve failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    raw = json.loads(result.read_text())
    return {
        "req_s": raw["request_throughput"],
        "completed": raw["completed"],
        "failed": prompts - raw["completed"],
        "input_tokens": raw["total_input_tokens"],
        "ttfts_ms": [t * 1e3 for t in raw["ttfts"] if t],
        "itls_ms": [t * 1e3 for request in raw["itls"] for t in request],
    }


def measure(args, model_dir: Path, runs: Path) -> list[dict]:
    clips = Clips(runs / "clips")
    ours_arms = {k: v for k, v in OURS.items() if not args.small or k != "ours, sharp r=0.1"}
    stock_arms = {"stock": None} if args.small else STOCK
    modes = ("waves",) if args.small else ("waves", "poisson")
    rows: list[dict] = []

    def run_server(server: ServerProcess, name: str, arms: dict) -> None:
        # A few discarded requests first: a fresh engine's first requests pay one-time costs.
        warm = clips.dataset(2)
        bench_serve(server, model_dir, warm, 2, poisson=False, runs=runs,
                    extra_body={"sharp": {"retention": 0.25}} if name == "ours" else None)  # fmt: skip
        for mode in modes:
            for arm, setting in arms.items():
                extra = {"sharp": setting} if name == "ours" else None
                measured = bench_serve(server, model_dir, clips.dataset(args.prompts), args.prompts,
                                       poisson=mode == "poisson", extra_body=extra, runs=runs)  # fmt: skip
                rows.append({"round": index, "arm": arm, "mode": mode, **measured})
                print(f"round {index + 1} {mode:7} {arm:20} {measured['req_s']:.3f} req/s", file=sys.stderr)

    for index in range(args.rounds):
        order = ["ours", "stock"] if index % 2 == 0 else ["stock", "ours"]
        for side in order:
            if side == "ours":
                server = start_ours(model_dir, clips.directory, runs)
                try:
                    run_server(server, "ours", ours_arms)
                finally:
                    server.stop(grace_s=30)
            else:
                for arm, evs in stock_arms.items():
                    server = start_stock(model_dir, clips.directory, runs, arm, evs)
                    try:
                        run_server(server, arm, {arm: None})
                    finally:
                        server.stop(grace_s=30)
    return rows


def summarise(rows: list[dict], rounds: int) -> dict:
    arms = sorted({r["arm"] for r in rows}, key=lambda a: (not a.startswith("ours"), a))
    summary: dict = {"arms": {}, "ratios": {}}
    for mode in sorted({r["mode"] for r in rows}):
        mine = [r for r in rows if r["mode"] == mode]
        for arm in arms:
            runs = sorted((r for r in mine if r["arm"] == arm), key=lambda r: r["round"])
            if not runs:
                continue
            ttfts = [t for r in runs for t in r["ttfts_ms"]]
            itls = [t for r in runs for t in r["itls_ms"]]
            ttft_label, ttft_q = percentile_label(len(ttfts))
            itl_label, itl_q = percentile_label(len(itls))
            summary["arms"][f"{arm}, {mode}"] = {
                "arm": arm, "mode": mode, "rounds": len(runs),
                "req_s": median_with_interval([r["req_s"] for r in runs]),
                "req_s_rounds": [r["req_s"] for r in runs],
                "failed": sum(r["failed"] for r in runs),
                "input_tokens_per_request": runs[0]["input_tokens"] / max(runs[0]["completed"], 1),
                "ttft_p50_ms": float(np.percentile(ttfts, 50)),
                "ttft_tail": {ttft_label: float(np.percentile(ttfts, ttft_q))}, "ttft_samples": len(ttfts),
                "itl_p50_ms": float(np.percentile(itls, 50)),
                "itl_tail": {itl_label: float(np.percentile(itls, itl_q))}, "itl_samples": len(itls),
            }  # fmt: skip

        def by_round(arm: str, runs: list[dict] = mine) -> list[float]:
            return [r["req_s"] for r in sorted(runs, key=lambda r: r["round"]) if r["arm"] == arm]

        pairs = {
            "ours sharp r=0.25 / ours off": ("ours, sharp r=0.25", "ours, off"),
            "ours off / stock": ("ours, off", "stock"),
            "ours sharp r=0.25 / stock": ("ours, sharp r=0.25", "stock"),
            "ours sharp r=0.25 / stock EVS r=0.25": ("ours, sharp r=0.25", "stock EVS r=0.25"),
            "ours sharp r=0.1 / stock EVS r=0.25": ("ours, sharp r=0.1", "stock EVS r=0.25"),
            "ours sharp r=0.1 / stock EVS r=0.1": ("ours, sharp r=0.1", "stock EVS r=0.1"),
        }
        for name, (a, b) in pairs.items():
            if by_round(a) and by_round(b):
                summary["ratios"][f"{name}, {mode}"] = ratio(by_round(a), by_round(b))
    ratios = summary["ratios"]
    summary["targets"] = {}
    for name, needs in (("ours sharp r=0.25 / ours off, waves", 1.0), ("ours off / stock, waves", 0.95)):
        if name in ratios:
            r = ratios[name]
            summary["targets"][f"req/s at C = 8: {name.removesuffix(', waves')}"] = {
                "median": r["median"], "ci95": r["ci95"], "target": f">= {needs}", "met": met(r, needs)
            }  # fmt: skip
    return summary


def markdown(report: dict) -> str:
    lines = [
        "# Load: `vllm bench serve` against our server and stock vLLM",
        "",
        f"{report['rounds']} rounds, {report['prompts']} requests per run at concurrency {CONCURRENCY}; "
        f"N = {report['video_tokens']} video tokens per request; the {report['shape_name']}-shaped model.",
        "",
        "| arm, arrivals | req/s median [95%] | TTFT p50 | TTFT tail | ITL p50 | ITL tail | failed |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, a in report["summary"]["arms"].items():
        (tl, tv), (il, iv) = next(iter(a["ttft_tail"].items())), next(iter(a["itl_tail"].items()))
        r = a["req_s"]
        lines.append(
            f"| {name} | {r['median']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] | "
            f"{a['ttft_p50_ms']:.0f} | {tl} {tv:.0f} | {a['itl_p50_ms']:.0f} | {il} {iv:.0f} | "
            f"{a['failed']} |"
        )
    lines += ["", "| ratio of req/s | median [95%] |", "|---|---|"]
    for name, r in report["summary"]["ratios"].items():
        lines.append(f"| {name} | {r['median']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] |")
    lines += ["", "| target | median [95%] | needs | met |", "|---|---|---|---|"]
    for name, t in report["summary"]["targets"].items():
        interval = f"[{t['ci95'][0]:.3f}, {t['ci95'][1]:.3f}]"
        lines.append(
            f"| {name} | {t['median']:.3f} {interval} | {t['target']} | {'yes' if t['met'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = report["summary"]["arms"]
    fig, (ax_rate, ax_itl) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = list(arms)
    medians = [arms[n]["req_s"]["median"] for n in names]
    errors = [[m - arms[n]["req_s"]["ci95"][0] for n, m in zip(names, medians, strict=True)],
              [arms[n]["req_s"]["ci95"][1] - m for n, m in zip(names, medians, strict=True)]]  # fmt: skip
    ax_rate.barh(names, medians, xerr=errors)
    ax_rate.set_xlabel("requests / s (median, 95% interval over rounds)")
    ax_itl.barh(names, [next(iter(arms[n]["itl_tail"].values())) for n in names])
    ax_itl.set_xlabel("ITL tail (ms): p99 where the sample allows")
    for ax in (ax_rate, ax_itl):
        ax.invert_yaxis()
    fig.suptitle(f"vllm bench serve at concurrency {CONCURRENCY}, {report['shape_name']}-shaped model, CPU")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=16, help="requests per run")
    add_output_arguments(parser)
    args = parser.parse_args()
    configure_environment()
    if args.small:
        args.rounds, args.prompts = 1, 4
    out = output_dir(args, "load")
    runs = REPO / "runs" / ("load-small" if args.small else "load")
    runs.mkdir(parents=True, exist_ok=True)
    config = matched_config("qwen2.5-vl-7b")
    if args.small:
        text_of(config)["num_hidden_layers"] = 4
    model_dir = write_model(REPO / "runs" / "bench-models" / f"load{'-small' if args.small else ''}", config,
                            max_pixels=SIDE * SIDE)  # fmt: skip
    rows = measure(args, model_dir, runs)
    report = {
        "rounds": args.rounds, "prompts": args.prompts, "concurrency": CONCURRENCY,
        "frames": FRAMES, "side": SIDE, "fps": FPS, "video_tokens": (FRAMES // 2) * (SIDE // 28) ** 2,
        "output_tokens": {"waves": WAVE_TOKENS, "poisson": POISSON_TOKENS}, "poisson_rate": POISSON_RATE,
        "shape_name": "qwen2.5-vl-7b",
        "shape": shape_summary(matched_config("qwen2.5-vl-7b"), "qwen2.5-vl-7b"),
        "small": args.small, "rows": rows, "summary": summarise(rows, args.rounds),
    }  # fmt: skip
    write_report(out, "load", report, markdown, plot, sources=SOURCES)


if __name__ == "__main__":
    main()
