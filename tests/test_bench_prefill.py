"""CI mode of bench/prefill.py: the machinery end to end on the real engine (the bench
model at real depth, the stock and our architectures, the stage hooks). Its timings are
not asserted: a speed claim is a ratio from a full run (bench/README.md)."""

import json

import pytest

from sharp_plugin.core import kept_count

from .conftest import run_small_bench

pytestmark = pytest.mark.engine


def test_small_prefill_run_measures_every_arm_and_stage(tmp_path):
    run = run_small_bench("prefill", tmp_path, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "prefill.json").read_text())
    ratio = report["vision_lm_flops_ratio"]
    assert abs(ratio["bench"] / ratio["qwen25vl_7b"] - 1) < 0.10, ratio
    rows = {row["arm"]: row for row in report["rows"]}
    expected = {
        "stock", "none", "sharp K=1", "sharp K=2", "fastv", "uniform", "sharp K=2, debias off",
        "sharp K=2, question prior", "sharp K=2, follow-up question",
    }  # fmt: skip
    assert expected <= set(rows)
    n = 4096
    assert all(row["video_tokens"] == n for row in rows.values())
    for arm in ("stock", "none"):
        assert rows[arm]["prompt_tokens"] == rows[arm]["text_tokens"] + n
    for arm in ("sharp K=1", "sharp K=2", "fastv", "uniform"):
        row = rows[arm]
        assert row["kept"] == kept_count(0.1, n) and row["prompt_tokens"] == row["text_tokens"] + row["kept"]
        assert 0 < row["vision_ms"] < row["ttft_ms"] and row["lm_prefill_ms"] > 0
        assert row["ceiling_lm"] > 1 and 1 < row["ceiling_whole"] < 4
    # Scoring methods ran a scoring pass. The generic black prior came from its cache (the
    # warm-up computed it); the question prior was computed for this request's new question.
    assert rows["sharp K=2"]["scoring_ms"] > 0 and rows["sharp K=2"]["prior"] == ["cached"]
    assert rows["sharp K=2, question prior"]["prior"] == ["computed"]
    assert rows["sharp K=2, debias off"]["prior"] == ["None"] and rows["uniform"]["scoring_ms"] == 0
    # A follow-up question on a known video: no vision-tower run, a fresh selection.
    follow_up = rows["sharp K=2, follow-up question"]
    assert follow_up["vision_ms"] == 0 and follow_up["scoring_ms"] > 0
    assert follow_up["kept"] == kept_count(0.1, n)
    assert (tmp_path / "prefill.png").stat().st_size > 10_000
