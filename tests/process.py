"""Run an HTTP server process for a test and wait until it is healthy."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def http_server(
    command: list[str],
    health_url: str,
    log_path: Path,
    *,
    env: dict | None = None,
    cwd=None,
    timeout_s: float = 300,
) -> Iterator[subprocess.Popen]:
    """Start `command`, yield once `health_url` answers 200; fail with the log's tail if the
    process dies or never gets healthy. Always terminates the process."""
    started = time.monotonic()
    with open(log_path, "w") as log:
        # Its own process group, so that a kill reaches the engine processes it spawned.
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"{command[0]} exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                if httpx.get(health_url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - started > timeout_s:
                pytest.fail(f"not healthy after {timeout_s:.0f}s:\n{log_path.read_text()[-4000:]}")
            time.sleep(1)
        print(f"{Path(command[0]).name} healthy after {time.monotonic() - started:.1f} s")
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            # `vllm serve` sometimes sat out the whole grace period (30 s in CI): nothing
            # of a test's server needs a graceful end.
            process.kill()
            process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever it left behind
