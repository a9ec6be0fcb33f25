"""A bounded mixed soak of the real server: streams, uploads, disconnects and bad
requests at a fixed concurrency, watching for server errors, leaks and growth.

Usage: python -m bench.soak [--requests 1000] [--concurrency 8] [--small]
It starts `sharp-serve` (default config: the proxy model on CPU) on a free loopback port
with its own upload directory and TMPDIR, drives it with httpx, then reports:
- responses by status and by kind of request, p50/p95 latency per kind;
- RSS of the server process and of vLLM's processes under it (engine core and workers)
  over time, and its growth
  from the end of warm-up (the first 20% of requests) to the end;
- files left behind (upload store, partial uploads, temporary media);
- engine requests still unfinished once the load stops.
Writes soak.{json,md,png} (RSS over time) to --out. --small is the CI mode (80
requests at concurrency 4, results under runs/). The server's log is kept in
runs/soak-server.log. Exit status 1 when a target is missed:
any 5xx, any leaked file, any unfinished request, or RSS growth of 5% or more.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import av
import httpx
import numpy as np
import psutil

from bench.common.results import REPO, add_output_arguments, output_dir, write_report
from bench.common.servers import ServerFailed, ServerProcess, free_port, ours_command

SOURCES = ["server", "sharp_plugin", "configs/default.yaml", "bench/soak.py"]
MODEL = "sharp-proxy-qwen25vl"
# The mix, by share of requests.
KINDS = {
    "chat": 0.35,  # non-streaming, data: URL, random settings
    "stream": 0.25,  # streaming, file:// URL
    "upload": 0.15,  # upload, ask about the file id, delete it
    "disconnect": 0.10,  # the client leaves mid-request (streaming or not)
    "bad": 0.15,  # malformed or hostile: must be a 4xx
}
SETTINGS = [
    {"method": "none"},
    {"retention": 0.25},
    {"retention": 0.1},
    {"method": "fastv", "retention": 0.25},
    {"method": "uniform", "retention": 0.5},
    {"method": "random", "retention": 0.3, "seed": 7},
    {"retention": 0.25, "debias": "mean"},
]


def write_clip(path: Path, seed: int, frames: int = 32, size: int = 112) -> Path:
    pixels = (np.random.RandomState(seed).rand(frames, size, size, 3) * 255).astype(np.uint8)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for frame in pixels:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def message(part: dict, text: str = "What colour is the shape?") -> list[dict]:
    return [{"role": "user", "content": [part, {"type": "text", "text": text}]}]


def url_part(url: str) -> dict:
    return {"type": "video_url", "video_url": {"url": url}}


class Soak:
    def __init__(self, base_url: str, clips: list[Path], rng: random.Random):
        self.base_url, self.clips, self.rng = base_url, clips, rng
        self.data_urls = ["data:video/mp4;base64," + base64.b64encode(c.read_bytes()).decode() for c in clips]
        self.results: list[dict] = []

    def chat_body(self, part: dict, **extra) -> dict:
        return {
            "model": MODEL,
            "messages": message(part, self.rng.choice(["What colour is the shape?", "What is it?"])),
            "max_tokens": self.rng.choice([2, 4, 8]),
            "temperature": 0.0,
            "sharp": self.rng.choice(SETTINGS),
            **extra,
        }

    async def one(self, client: httpx.AsyncClient, kind: str) -> tuple[int, str]:
        """Returns (status, outcome). Status 0: the client left before an answer."""
        url = f"{self.base_url}/v1/chat/completions"
        if kind == "chat":
            response = await client.post(url, json=self.chat_body(url_part(self.rng.choice(self.data_urls))))
            return response.status_code, "ok" if response.json().get("sharp") else "no report"
        if kind == "stream":
            body = self.chat_body(url_part(f"file://{self.rng.choice(self.clips)}"), stream=True)
            body["stream_options"] = {"include_usage": True}
            async with client.stream("POST", url, json=body) as response:
                lines = [line async for line in response.aiter_lines() if line]
            done = lines[-1:] == ["data: [DONE]"]
            return response.status_code, "ok" if done else "no [DONE]"
        if kind == "upload":
            clip = self.rng.choice(self.clips)
            created = await client.post(
                f"{self.base_url}/v1/files",
                files={"file": (clip.name, clip.read_bytes())},
                data={"purpose": "user_data"},
            )
            if created.status_code != 200:
                return created.status_code, "upload refused"
            file_id = created.json()["id"]
            response = await client.post(
                url, json=self.chat_body({"type": "file", "file": {"file_id": file_id}})
            )
            await client.delete(f"{self.base_url}/v1/files/{file_id}")
            return response.status_code, "ok"
        if kind == "disconnect":
            body = self.chat_body(url_part(self.rng.choice(self.data_urls)), max_tokens=2000, ignore_eos=True)
            if self.rng.random() < 0.5:
                body["stream"] = True
                async with client.stream("POST", url, json=body) as response:
                    async for line in response.aiter_lines():
                        if line.startswith("data: {"):
                            break  # leave after the first chunk: the context manager closes
                return 0, "left mid-stream"
            try:
                await client.post(url, json=body, timeout=1.0)
            except httpx.TimeoutException:
                return 0, "left before the answer"
            return 200, "finished before leaving"
        # bad: a rotating catalogue of client mistakes; each must be a 4xx.
        bad = self.rng.choice(
            [
                {"model": MODEL, "messages": []},
                self.chat_body(url_part("data:video/mp4;base64,AAAA")),
                self.chat_body(url_part(self.data_urls[0]), sharp={"method": "random", "seed": 2**70}),
                self.chat_body(
                    url_part(self.data_urls[0]), sharp={"retention": 0.5, "segment_frames": 10**20}
                ),
                self.chat_body(url_part(self.data_urls[0]), stop=[""]),
                self.chat_body(url_part("file:///etc/passwd")),
                self.chat_body(url_part(self.data_urls[0]), max_tokens=2**64),
                self.chat_body(url_part(self.data_urls[0]), media_io_kwargs={"video": {"fps": 1e308}}),
            ]
        )
        response = await client.post(url, json=bad)
        return response.status_code, "4xx" if 400 <= response.status_code < 500 else "not a 4xx"

    async def run(self, total: int, concurrency: int) -> None:
        kinds = self.rng.choices(list(KINDS), weights=list(KINDS.values()), k=total)
        queue: asyncio.Queue = asyncio.Queue()
        for index, kind in enumerate(kinds):
            queue.put_nowait((index, kind))
        async with httpx.AsyncClient(timeout=300) as client:

            async def worker() -> None:
                while not queue.empty():
                    index, kind = queue.get_nowait()
                    started = time.monotonic()
                    try:
                        status, outcome = await self.one(client, kind)
                    except httpx.HTTPError as exc:
                        status, outcome = -1, f"client error: {type(exc).__name__}"
                    self.results.append(
                        {
                            "index": index,
                            "kind": kind,
                            "status": status,
                            "outcome": outcome,
                            "seconds": time.monotonic() - started,
                            "finished_at": time.monotonic(),
                        }
                    )

            await asyncio.gather(*(worker() for _ in range(concurrency)))


class RssSampler(threading.Thread):
    """RSS of the server process (API + AsyncLLM frontend) and of vLLM's processes
    under it (engine core and its workers, summed), every `period_s`."""

    def __init__(self, server: psutil.Process, period_s: float = 1.0):
        super().__init__(daemon=True)
        self.server, self.period_s = server, period_s
        self.samples: list[dict] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.period_s):
            try:
                engine = 0
                for child in self.server.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        engine += child.memory_info().rss
                self.samples.append(
                    {
                        "t": time.monotonic(),
                        "server_mb": self.server.memory_info().rss / 2**20,
                        "engine_mb": engine / 2**20 or None,
                    }
                )
            except psutil.Error:
                continue


def metric(base_url: str, name: str) -> float:
    for line in httpx.get(f"{base_url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def server_side_5xx(base_url: str) -> int:
    """5xx responses the server counted itself: a client that left never saw them."""
    total = 0
    for line in httpx.get(f"{base_url}/metrics", timeout=10).text.splitlines():
        if line.startswith("sharp_requests_total{") and 'status="5' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    add_output_arguments(parser)  # --small: 80 requests at concurrency 4
    args = parser.parse_args()
    if args.small:
        args.requests, args.concurrency = 80, 4
    out = output_dir(args, "soak")

    work = Path(tempfile.mkdtemp(prefix="sharp-soak-"))
    media, files, tmp = work / "media", work / "files", work / "tmp"
    for d in (media, files, tmp):
        d.mkdir()
    clips = [write_clip(media / f"clip{i}.mp4", seed=i, frames=16 + 8 * (i % 3)) for i in range(6)]
    port = free_port()
    env = {
        "TMPDIR": str(tmp),
        "SHARP_SERVE_SECURITY__ALLOWED_LOCAL_ROOT": str(media),
        "SHARP_SERVE_FILES__DIRECTORY": str(files),
    }
    log_path = work / "server.log"
    server = ServerProcess(
        ours_command(REPO / "configs/default.yaml", port), port, log_path, env=env, cwd=work
    )
    try:
        server.start()
    except ServerFailed as exc:
        print(exc)
        return 1
    base_url = server.base_url
    try:
        sampler = RssSampler(psutil.Process(server.process.pid), period_s=0.2 if args.small else 1.0)
        sampler.start()
        soak = Soak(base_url, clips, random.Random(0))
        started = time.monotonic()
        asyncio.run(soak.run(args.requests, args.concurrency))
        elapsed = time.monotonic() - started
        # Let aborted requests drain, then read what is left.
        drain = time.monotonic() + 30
        while (
            unfinished := metric(base_url, "sharp_engine_unfinished_requests")
        ) and time.monotonic() < drain:
            time.sleep(0.5)
        sampler.stop.set()
        sampler.join()
        healthy = httpx.get(f"{base_url}/health", timeout=10).status_code == 200
        counted_5xx = server_side_5xx(base_url)
        server_log = log_path.read_text()
    finally:
        server.stop(grace_s=30)
    left = {
        "stored_files": len(list(files.glob("file-*"))),
        "partial_uploads": len(list(files.glob(".file-*"))),
        "temporary_media": len([p for p in tmp.rglob("*") if "sharp-media-" in str(p) or p.is_file()]),
    }
    report = summarise(soak.results, sampler.samples, started, elapsed, args, left, unfinished, healthy)
    report["tracebacks_in_log"] = server_log.count("Traceback")
    report["server_counted_5xx"] = counted_5xx
    report["targets"]["no_5xx_counted_by_the_server"] = counted_5xx == 0
    report["passed"] = report["passed"] and counted_5xx == 0
    report["targets"]["no_tracebacks_in_log"] = report["tracebacks_in_log"] == 0
    report["passed"] = report["passed"] and report["tracebacks_in_log"] == 0
    kept_log = REPO / "runs" / "soak-server.log"
    kept_log.parent.mkdir(exist_ok=True)
    kept_log.write_text(server_log)
    shutil.rmtree(work, ignore_errors=True)
    write_report(out, "soak", report, markdown, plot, sources=SOURCES, indent=2)
    return 0 if report["passed"] else 1


def summarise(results, samples, started, elapsed, args, left, unfinished, healthy) -> dict:
    by_status = Counter(str(r["status"]) for r in results)
    by_kind: dict[str, dict] = {}
    for kind in KINDS:
        rows = [r for r in results if r["kind"] == kind]
        seconds = [r["seconds"] for r in rows if r["status"] == 200]
        by_kind[kind] = {
            "requests": len(rows),
            "statuses": dict(Counter(str(r["status"]) for r in rows)),
            "outcomes": dict(Counter(r["outcome"] for r in rows)),
            "p50_s": percentile(seconds, 50),
            "p95_s": percentile(seconds, 95),
        }
    warm_end = sorted(r["finished_at"] for r in results)[len(results) // 5] if results else started
    rss = {}
    for key in ("server_mb", "engine_mb"):
        after_warmup = [s[key] for s in samples if s[key] is not None and s["t"] >= warm_end]
        if after_warmup:
            tail = after_warmup[-max(1, len(after_warmup) // 10) :]
            rss[key] = {
                "after_warmup": after_warmup[0],
                "end": statistics.median(tail),
                "max": max(after_warmup),
                "growth": statistics.median(tail) / after_warmup[0] - 1,
            }
    server_errors = sum(n for status, n in by_status.items() if status.startswith("5"))
    wrong = sum(1 for r in results if r["outcome"] in ("not a 4xx", "no report", "no [DONE]"))
    client_errors = sum(1 for r in results if r["status"] == -1)
    targets = {
        "no_5xx": server_errors == 0,
        "every_request_as_expected": wrong == 0 and client_errors == 0,
        "nothing_left_behind": not any(left.values()),
        "no_unfinished_engine_requests": unfinished == 0,
        "healthy_at_end": healthy,
        "rss_growth_under_5pct": bool(rss) and all(v["growth"] < 0.05 for v in rss.values()),
    }
    # A small run is too short for growth after warm-up to mean anything: reported only.
    gated = {name: ok for name, ok in targets.items() if not (args.small and name.startswith("rss"))}
    passed = all(gated.values())
    return {
        "requests": len(results),
        "concurrency": args.concurrency,
        "elapsed_s": elapsed,
        "requests_per_s": len(results) / elapsed if elapsed else 0.0,
        "by_status": dict(sorted(by_status.items())),
        "server_errors": server_errors,
        "unexpected_outcomes": wrong,
        "client_side_errors": client_errors,
        "by_kind": by_kind,
        "rss_mb": rss,
        "left_behind": left,
        "unfinished_engine_requests": unfinished,
        "healthy_at_end": healthy,
        "targets": targets,
        "passed": passed,
        "rss_samples": [
            {"t": s["t"] - started, "server_mb": s["server_mb"], "engine_mb": s["engine_mb"]} for s in samples
        ],
    }


def markdown(report: dict) -> str:
    requests, concurrency, elapsed = report["requests"], report["concurrency"], report["elapsed_s"]
    lines = [
        f"# Soak: {requests} requests at concurrency {concurrency} in {elapsed:.0f} s",
        "",
        f"statuses: {report['by_status']}  (0 = the client left on purpose)",
        "",
        "| kind | requests | statuses | p50 s | p95 s |",
        "|---|---|---|---|---|",
    ]
    for kind, row in report["by_kind"].items():
        p50, p95 = (f"{row[k]:.2f}" if row[k] is not None else "-" for k in ("p50_s", "p95_s"))
        lines.append(f"| {kind} | {row['requests']} | {row['statuses']} | {p50} | {p95} |")
    lines.append("")
    for key, row in report["rss_mb"].items():
        lines.append(
            f"- {key}: {row['after_warmup']:.0f} MB after warm-up -> {row['end']:.0f} MB "
            f"({row['growth']:+.1%})"
        )
    seen, counted = report["server_errors"], report["server_counted_5xx"]
    lines += [
        f"- left behind: {report['left_behind']}",
        f"- unfinished engine requests: {report['unfinished_engine_requests']}",
        f"- server errors: {seen} seen by clients, {counted} in /metrics",
        f"- passed: {report['passed']}",
    ]
    return "\n".join(lines) + "\n"


def plot(report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    samples = report["rss_samples"]
    t = [s["t"] for s in samples]
    ax.plot(t, [s["server_mb"] for s in samples], label="server (API + AsyncLLM frontend)")
    ax.plot(t, [s["engine_mb"] or np.nan for s in samples], label="vLLM engine core + workers")
    ax.set_xlabel("seconds into the soak")
    ax.set_ylabel("RSS (MB)")
    ax.set_title(f"{report['requests']} mixed requests at concurrency {report['concurrency']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
