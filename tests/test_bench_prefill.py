"""CI mode of bench/prefill.py: the machinery end to end on the real engine (a shape
matched to Qwen2.5-VL-7B, cut to 4 layers and a short video; the stock, our and an EVS
engine; the stage hooks; interleaved rounds; ratios with intervals; ceilings; targets).
Its timings are not asserted: a speed claim comes from a full run (bench/README.md)."""

import json

import pytest

from sharp_plugin.core import kept_count

from .conftest import run_small_bench

pytestmark = pytest.mark.engine


def test_small_prefill_run_measures_every_arm_stage_and_round(tmp_path):
    run = run_small_bench("prefill", tmp_path, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "prefill.json").read_text())
    assert (tmp_path / "prefill.png").stat().st_size > 10_000
    shape = report["shapes"]["qwen2.5-vl-7b"]
    # The shape's costs at the real video are the real model's, as the JSON says.
    for name in ("attention_share", "vision_lm_ratio", "layers"):
        assert shape["shape"][name]["within_10pct"], shape["shape"][name]
    arms, n = shape["arms"], shape["video_tokens"]
    assert set(arms) == {
        "stock", "ours, none", "sharp r=0.1", "sharp r=0.1, follow-up", "sharp r=0.1, prior miss", "EVS r=0.1"
    }  # fmt: skip
    for name, arm in arms.items():
        assert len(arm["rows"]) == report["rounds"] == 2
        assert len(arm["ttft_speedup"]["rounds"]) == 2
        low, high = arm["ttft_speedup"]["ci95"]
        assert low <= arm["ttft_speedup"]["median"] <= high, name
    for name in ("sharp r=0.1", "sharp r=0.1, prior miss", "sharp r=0.1, follow-up"):
        for row in arms[name]["rows"]:
            assert row["video_tokens"] == n and row["kept"] == kept_count(0.1, n)
            assert row["scoring_ms"] > 0
        assert arms[name]["ceiling_lm"] > 0
    # With 4 layers and K = 2, a second scoring pass costs more than it saves.
    assert arms["sharp r=0.1"]["ceiling_lm"] > 1 > arms["sharp r=0.1, prior miss"]["ceiling_lm"]
    # The generic prior comes from its cache; the question prior is computed every time
    # (a new question each request); a follow-up question skips the vision tower.
    assert arms["sharp r=0.1"]["prior_status"] == ["cached"]
    assert arms["sharp r=0.1, prior miss"]["prior_status"] == ["computed"]
    assert all(row["prior_ms"] > 0 for row in arms["sharp r=0.1, prior miss"]["rows"])
    assert all(row["tower_ms"] == 0 for row in arms["sharp r=0.1, follow-up"]["rows"])
    assert all(row["tower_ms"] > 0 for row in arms["stock"]["rows"] + arms["EVS r=0.1"]["rows"])
    # Every target is stated with its interval and a verdict.
    assert len(shape["targets"]) == 4 and all(
        isinstance(t["met"], bool) and len(t["ci95"]) == 2 for t in shape["targets"].values()
    )
    assert report["provenance"]["command"].endswith("bench.prefill --small --out " + str(tmp_path))
