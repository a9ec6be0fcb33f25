"""`scripts/gpu_bench.sh --tiny`: the GPU run rehearsed on the CPU with tiny shapes, every
step but the device (CI runs it so the script a GPU host gets has run end to end)."""

import json
import os
import subprocess
import sys

import pytest

from bench.common.results import REPO

pytestmark = pytest.mark.engine


def gpu_bench(out, *flags: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    command = ["bash", str(REPO / "scripts" / "gpu_bench.sh"), "--tiny", "--out", str(out), *flags]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def test_tiny_run_measures_every_stage_of_both_models(tmp_path):
    run = gpu_bench(tmp_path, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    qwen25 = json.loads((tmp_path / "qwen2.5-vl-7b.json").read_text())
    qwen3 = json.loads((tmp_path / "qwen3-vl-8b.json").read_text())
    assert qwen25["stopped"] is None and qwen3["stopped"] is None
    # Each kind of step once (bench/gpu.py: TINY_*): one length, one EVS engine.
    assert list(qwen25["stages"]) == ["ours, tiny", "evs-0.25, tiny"]
    # vLLM's own EVS crashes on Qwen3-VL; the run says so instead of timing it.
    assert list(qwen3["stages"]) == ["ours, tiny"]
    assert set(qwen3["not_run"]) == {"evs-0.25"}
    # The decode stage ran last: the server's CPU decode timed, the GPU decoders tried.
    decode = json.loads((tmp_path / "decode.json").read_text())
    assert decode["seconds"]["cpu: pyav, 2 readers"]["n"] == 5
    assert set(decode["not_run"]) == {"cuda: decord2", "cuda: torchcodec"}  # no GPU here
    for result in (qwen25, qwen3):
        assert result["provenance"]["commit"] and result["provenance"]["command"]
        for stage in result["stages"].values():
            arms = stage["arms"]
            tokens = {name: arm["prompt_tokens_median"] for name, arm in arms.items()}
            for name, arm in arms.items():
                assert len(arm["rows"]) == result["rounds"] and arm["ttft_ms_median"] > 0
                assert stage["req_s"][name]["median"] > 0
                if name != "stock":
                    assert stage["req_s_ratio_to_stock"][name]["median"] > 0
                    low, high = arm["ttft_speedup"]["ci95"]
                    assert low <= arm["ttft_speedup"]["median"] <= high
            # Arms ask different questions (a few tokens apart); their videos are as long
            # unless pruned (64 or 128 video tokens here).
            if "ours, none" in arms:
                assert abs(tokens["ours, none"] - tokens["stock"]) <= 5
                assert tokens["sharp r=0.1"] < tokens["sharp r=0.25"] < tokens["stock"] - 30
                assert "ours with none against stock (TTFT ratio)" in stage["targets"]
            else:
                assert [name for name in tokens if name != "stock"][0].startswith("EVS")
                assert max(v for k, v in tokens.items() if k != "stock") < tokens["stock"] - 30


def test_a_run_out_of_time_stops_cleanly_with_what_it_has(tmp_path):
    run = gpu_bench(tmp_path, "--minutes", "0.2", "--models", "qwen2.5-vl-7b", timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((tmp_path / "qwen2.5-vl-7b.json").read_text())
    assert result["stages"] == {}
    assert "s left, the stock engine needs about" in result["stopped"]
    assert "stopped:" in run.stderr
