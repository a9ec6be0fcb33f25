"""Server start-up time and per-request latency, side by side in one run: the real
server (default config, tiny model, CPU) and the openai client on 127.0.0.1.

Usage: python bench/server_latency.py [--requests 8]
Each request uses a distinct 4 s 224^2 clip (no cache hits), max_tokens 8, sequential.
Writes bench/results/server_latency.json."""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import httpx
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {
    "none": {"method": "none"},
    "uniform r=0.25": {"method": "uniform", "retention": 0.25},
    "sharp r=0.25": {"method": "sharp", "retention": 0.25},
    "sharp r=0.1": {"method": "sharp", "retention": 0.1},
}


def clip_url(seed: int) -> str:
    pixels = (np.random.RandomState(seed).rand(32, 224, 224, 3) * 255).astype(np.uint8)
    with tempfile.NamedTemporaryFile(suffix=".mp4") as f:
        with av.open(f.name, mode="w") as container:
            stream = container.add_stream("libx264", rate=8)
            stream.width = stream.height = 224
            stream.pix_fmt = "yuv420p"
            for frame in pixels:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        return "data:video/mp4;base64," + base64.b64encode(Path(f.name).read_bytes()).decode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=8)
    args = parser.parse_args()
    import openai

    config = yaml.safe_load((REPO / "configs/default.yaml").read_text())
    model = config["engine"]["served_model_name"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(REPO / "runs/bench-server.log", "w")  # noqa: SIM115
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "--config", str(REPO / "configs/default.yaml"), "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy(), cwd=REPO,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        startup_s = time.monotonic() - started
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused")
        urls = [clip_url(seed) for seed in range(len(SETTINGS) * args.requests + 1)]

        def message(url: str) -> list[dict]:
            parts = [
                {"type": "video_url", "video_url": {"url": url}},
                {"type": "text", "text": "What is shown?"},
            ]
            return [{"role": "user", "content": parts}]

        client.chat.completions.create(model=model, messages=message(urls.pop()), max_tokens=8)
        rows = []
        for name, sharp in SETTINGS.items():
            latencies, reports, prompt_tokens = [], [], []
            for _ in range(args.requests):
                t0 = time.perf_counter()
                response = client.chat.completions.create(
                    model=model, messages=message(urls.pop()), max_tokens=8, temperature=0.0,
                    extra_body={"sharp": sharp},
                )  # fmt: skip
                latencies.append(time.perf_counter() - t0)
                reports.append(response.model_extra["sharp"])
                prompt_tokens.append(response.usage.prompt_tokens)
            rows.append(
                {
                    "settings": name,
                    "latency_s_median": statistics.median(latencies),
                    "latency_s": latencies,
                    "video_tokens": reports[0]["video_tokens"],
                    "video_tokens_kept": reports[0]["video_tokens_kept"],
                    "prompt_tokens": prompt_tokens[0],
                    "scoring_ms_median": statistics.median(r["scoring_ms"] for r in reports),
                }
            )
    finally:
        process.terminate()
        process.wait(timeout=60)
    print(f"server start-up (process start -> /health 200): {startup_s:.1f} s")
    print(f"{'settings':16} {'tokens':>10} {'prompt':>7} {'latency s (median)':>19} {'scoring ms':>11}")
    for r in rows:
        tokens = f"{r['video_tokens']:>4}->{r['video_tokens_kept']:<5}"
        print(
            f"{r['settings']:16} {tokens} {r['prompt_tokens']:>7} "
            f"{r['latency_s_median']:>19.3f} {r['scoring_ms_median']:>11.1f}"
        )
    out = REPO / "bench/results/server_latency.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"startup_s": startup_s, "requests_per_setting": args.requests, "rows": rows}, indent=2)
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
