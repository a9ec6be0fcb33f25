"""An HTTP server in a child process: started with a deadline for its /health, polled
while it starts (a process that dies says so at once, with its log's tail), and stopped
with its whole process group, so that no engine process it spawned outlives it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


class ServerFailed(RuntimeError):
    """The server exited or never became healthy; the message ends with its log's tail."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ours_command(config: Path, port: int) -> list[str]:
    """sharp-serve with a config file, on a loopback port."""
    return [sys.executable, "-m", "server", "--config", str(config), "--port", str(port)]


def vllm_command(command: list[str]) -> list[str]:
    """A `vllm ...` command with this environment's vllm executable."""
    return [str(Path(sys.executable).with_name("vllm")), *command[1:]]


class ServerProcess:
    def __init__(
        self,
        command: list[str],
        port: int,
        log: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        timeout_s: float = 600,
        name: str | None = None,
    ):
        self.command, self.port, self.log_path = command, port, Path(log)
        self.env, self.cwd, self.timeout_s = env, cwd or REPO, timeout_s
        self.name = name or Path(command[0]).name
        self.process: subprocess.Popen | None = None
        self.startup_s: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        started = time.monotonic()
        with open(self.log_path, "w") as log:
            # Its own process group, so that stop() reaches the engine processes it spawns,
            # but the caller's session: a new session is a scheduling group of its own
            # under the kernel's autogroup (on here), and with the server in one the
            # calling client's event loop stalled up to 6 s under load (bench/soak.py's
            # client, measured); in the caller's session, a few milliseconds.
            self.process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(self.env or {})},
                cwd=self.cwd,
                process_group=0,
            )
        with httpx.Client(timeout=2) as client:
            while True:
                if self.process.poll() is not None:
                    raise ServerFailed(
                        f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.base_url}/health").status_code == 200:
                        break
                if time.monotonic() - started > self.timeout_s:
                    self.stop()
                    raise ServerFailed(
                        f"{self.name} not healthy after {self.timeout_s:.0f} s:\n{self.log_tail()}"
                    )
                time.sleep(0.5)
        self.startup_s = time.monotonic() - started
        return self

    def alive(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def stop(self, grace_s: float = 10) -> None:
        """SIGTERM to the server, then after `grace_s` SIGKILL to its whole group: nothing
        of a test's or a bench's server needs a longer graceful end (`vllm serve` sometimes
        sat out its whole 30 s grace period)."""
        if self.process is None:
            return
        self.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=grace_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # whatever it left behind
        self.process.wait()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
