"""CI mode of bench/load.py: the peer's load client (`vllm bench serve`) against our server
and stock `vllm serve`, on the same model and clips. Speeds are not asserted (a speed
claim comes from a full run, bench/README.md); what is asserted is that both servers
answered every request, saw the same prompts, and that the report states its ratios
with intervals and its percentiles as far as the sample goes."""

import json

import pytest

from .conftest import run_small_bench

pytestmark = pytest.mark.engine


def test_small_load_run_drives_both_servers_with_vllm_bench_serve(tmp_path):
    run = run_small_bench("load", tmp_path, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "load.json").read_text())
    arms = report["summary"]["arms"]
    assert set(arms) == {"ours, off, waves", "ours, sharp r=0.25, waves", "stock, waves"}
    for arm in arms.values():
        assert arm["failed"] == 0 and arm["req_s"]["median"] > 0
        # 4 requests: too few for a p99 or a p90 of TTFT, so the tail is their maximum.
        assert list(arm["ttft_tail"]) == ["max"] and arm["ttft_samples"] == 4
    # The same clips and questions reached both servers as the same prompts; ShaRP's are
    # shorter by the pruned video tokens (N = 1152 per clip, 288 kept at r = 0.25).
    tokens = {name: arm["input_tokens_per_request"] for name, arm in arms.items()}
    assert tokens["ours, off, waves"] == tokens["stock, waves"]
    assert tokens["ours, off, waves"] - tokens["ours, sharp r=0.25, waves"] == 1152 - 288
    ratios = report["summary"]["ratios"]
    assert set(ratios) == {"ours sharp r=0.25 / ours off, waves", "ours off / stock, waves",
                           "ours sharp r=0.25 / stock, waves"}  # fmt: skip
    assert all(len(r["rounds"]) == 1 for r in ratios.values())
    assert (tmp_path / "load.png").stat().st_size > 10_000
