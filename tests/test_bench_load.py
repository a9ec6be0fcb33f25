"""CI mode of bench/load.py: the peer's load client (`vllm bench serve`) against our server
and stock `vllm serve`, on the same model and clips. Speeds are not asserted (a speed
claim is a ratio from a full run, bench/README.md); what is asserted is that both servers
answered every request and saw the same prompts."""

import json

import pytest

from .conftest import run_small_bench

pytestmark = pytest.mark.engine


def test_small_load_run_drives_both_servers_with_vllm_bench_serve(tmp_path):
    run = run_small_bench("load", tmp_path, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "load.json").read_text())
    rows = {(row["server"], row["method"], row["retention"]): row for row in report["rows"]}
    assert set(rows) == {("ours", "none", 1.0), ("ours", "sharp", 0.25), ("stock", "none", 1.0)}
    for row in rows.values():
        assert row["completed"] == report["setup"]["prompts_per_run"] and row["failed"] == 0
        assert row["req_s"] > 0 and 0 < row["ttft_p50_ms"] <= row["ttft_p99_ms"]
    # The same clips and questions reached both servers as the same prompts; ShaRP's are
    # shorter by the pruned video tokens (N = 1152 per clip, 288 kept at r = 0.25).
    per_request = {key: row["input_tokens"] / row["completed"] for key, row in rows.items()}
    assert per_request[("ours", "none", 1.0)] == per_request[("stock", "none", 1.0)]
    assert per_request[("ours", "none", 1.0)] - per_request[("ours", "sharp", 0.25)] == 1152 - 288
    assert (tmp_path / "load.png").stat().st_size > 10_000
