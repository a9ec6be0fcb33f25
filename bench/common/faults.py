"""Faults a soak injects into a running server, and what it watches while they land:
the engine core killed at set times, /health over time (the recovery after each kill),
and slow clients that the server must cut off at its deadlines."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import psutil


def engine_cores(server_pid: int) -> list[psutil.Process]:
    """vLLM's engine-core processes under the server."""
    cores = []
    for child in psutil.Process(server_pid).children(recursive=True):
        try:
            if "EngineCore" in " ".join(child.cmdline()):
                cores.append(child)
        except psutil.Error:
            continue
    return cores


class EngineKiller(threading.Thread):
    """Kills the server's engine core (SIGKILL) at each of `at_s` seconds from start."""

    def __init__(self, server_pid: int, at_s: list[float], started: float):
        super().__init__(daemon=True)
        self.server_pid, self.at_s, self.started = server_pid, at_s, started
        self.kills: list[float] = []  # monotonic times of the kills
        self.stop = threading.Event()

    def run(self) -> None:
        for offset in self.at_s:
            if self.stop.wait(max(0.0, self.started + offset - time.monotonic())):
                return
            cores = engine_cores(self.server_pid)
            for core in cores:
                core.kill()
            if cores:
                self.kills.append(time.monotonic())


class HealthWatcher(threading.Thread):
    """/health's status every `period_s`, each change kept with its time."""

    def __init__(self, base_url: str, period_s: float = 0.25):
        super().__init__(daemon=True)
        self.base_url, self.period_s = base_url, period_s
        self.changes: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self.stop.wait(self.period_s):
                try:
                    status = client.get(f"{self.base_url}/health").status_code
                except httpx.HTTPError:
                    status = 0
                if not self.changes or self.changes[-1][1] != status:
                    self.changes.append((time.monotonic(), status))

    def recovery_s(self, killed_at: float) -> float | None:
        """Seconds from a kill to the first 200 after it (None: not recovered)."""
        down = False
        for at, status in self.changes:
            if at < killed_at:
                continue
            down |= status != 200
            if status == 200 and down:
                return at - killed_at
        return None


class Tricklers(threading.Thread):
    """Every `every_s`, a client that sends its headers a byte every 0.5 s; each is
    checked to be cut off within `deadline_s` (the server's header deadline) plus slack."""

    def __init__(self, port: int, deadline_s: float, every_s: float = 3.0):
        super().__init__(daemon=True)
        self.port, self.deadline_s, self.every_s = port, deadline_s, every_s
        self.cut_off, self.outlived = 0, 0
        self.stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def run(self) -> None:
        while not self.stop.wait(self.every_s):
            thread = threading.Thread(target=self._one, daemon=True)
            thread.start()
            self._threads.append(thread)

    def join_all(self) -> None:
        for thread in self._threads:
            thread.join(timeout=self.deadline_s + 10)

    def _one(self) -> None:
        """Headers a byte every 0.5 s: longer than the deadline allows, so a connection
        that takes them all, or lives past the deadline and slack, outlived it."""
        request = b"POST /v1/chat/completions HTTP/1.1\r\nhost: soak\r\ncontent-length: 10\r\nx-slow: yes\r\n"
        started = time.monotonic()
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        except OSError:
            return
        with sock:
            for byte in request:
                if time.monotonic() - started > self.deadline_s + 5:
                    break
                try:
                    sock.sendall(bytes([byte]))
                except OSError:  # the server closed it: the next byte finds out
                    self.cut_off += 1
                    return
                time.sleep(0.5)
            self.outlived += 1
