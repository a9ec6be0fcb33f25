"""Session-wide fixtures: the tiny model (built offline by the project's own script) and
synthetic videos. Engines are expensive (20-60 s each on CPU), so they are session
scoped in tests/plugin/conftest.py and shared by every test that needs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# vLLM on CPU: a small KV cache and loopback for its internal queues.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
# Lets tests send a function to the engine's workers through collective_rpc (fault
# injection, a look at the profiling path). Test engines only; never set in production.
os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")

REPO = Path(__file__).resolve().parents[1]


def run_small_bench(bench: str, out: Path, timeout: int, *extra: str) -> subprocess.CompletedProcess:
    """A bench's CI mode (`python -m bench.<bench> --small`), writing into the directory
    `out`; the caller checks the outcome."""
    return subprocess.run(
        [sys.executable, "-m", f"bench.{bench}", "--small", "--out", str(out), *extra],
        capture_output=True, text=True, timeout=timeout, cwd=REPO,
    )  # fmt: skip


# The committed, trained proxy model: the default config's.
PROXY_MODEL = REPO / "models" / "sharp-proxy-qwen25vl"


@pytest.fixture(scope="session")
def proxy_model_dir() -> Path:
    assert (PROXY_MODEL / "config.json").exists(), f"{PROXY_MODEL} is missing from the checkout"
    return PROXY_MODEL


def build_tiny_model(tmp_path_factory, family: str) -> Path:
    """A tiny random-weights build of one family (scripts/build_tiny_model.py): the same
    weights and tokenizer every time."""
    out = tmp_path_factory.mktemp("models") / f"tiny-{family}"
    command = [sys.executable, str(REPO / "scripts" / "build_tiny_model.py"), str(out), "--family", family]
    subprocess.run(command, check=True, capture_output=True)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory, "qwen2.5-vl")


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory, "llava-onevision")


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory, "qwen3-vl")
