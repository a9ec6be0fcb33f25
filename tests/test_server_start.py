"""How `sharp-serve` starts: the port is taken before the engine loads, so a port in use
fails at once instead of after a minute of loading weights onto the device."""

import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_a_port_in_use_fails_before_the_engine_loads():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        run = subprocess.run(
            [sys.executable, "-m", "server", "--config", str(REPO / "configs" / "default.yaml"),
             "--host", "127.0.0.1", "--port", str(port)],
            capture_output=True, text=True, timeout=120, cwd=REPO,
        )  # fmt: skip
        elapsed = time.monotonic() - started
    assert run.returncode != 0
    assert "Address already in use" in run.stderr
    # Had the engine loaded first, vLLM would have logged its start (and taken 20-60 s).
    assert "vllm" not in run.stderr.lower(), run.stderr[-2000:]
    assert elapsed < 20, elapsed
