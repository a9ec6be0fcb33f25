"""Run an HTTP server process for a test and wait until it is healthy (the benches'
launcher, bench/common/servers.py, with a failure that fails the test)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from bench.common.servers import ServerFailed, ServerProcess, free_port

__all__ = ["free_port", "http_server"]


@contextlib.contextmanager
def http_server(
    command: list[str],
    health_url: str,
    log_path: Path,
    *,
    env: dict | None = None,
    cwd=None,
    timeout_s: float = 300,
) -> Iterator:
    """Start `command`, yield its process once `health_url`'s server answers /health with
    200; fail with the log's tail if it dies or never gets healthy. Always stops it and
    everything it spawned."""
    server = ServerProcess(
        command, urlparse(health_url).port, log_path, env=env, cwd=cwd, timeout_s=timeout_s
    )
    try:
        server.start()
    except ServerFailed as exc:
        pytest.fail(str(exc))
    try:
        print(f"{server.name} healthy after {server.startup_s:.1f} s")
        yield server.process
    finally:
        server.stop()
