"""CI mode of bench/quality.py: the machinery end to end (real engines), and the one
ranking that 16 clips settle: at a quarter of the tokens, query-aware selection finds
the needle far more often than uniform spacing (full run: 0.996 against 0.259)."""

import json

import pytest

from .conftest import run_small_bench

pytestmark = pytest.mark.engine


def test_small_quality_run_covers_every_method_at_a_matched_budget(tmp_path):
    run = run_small_bench("quality", tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "quality.json").read_text())
    assert (tmp_path / "quality.png").stat().st_size > 10_000
    assert "proxy" in (tmp_path / "quality.md").read_text().lower()

    results = report["results"]
    methods = ["none", "sharp", "sharp-local", "sharp-segments", "sharp-question-prior", "sharp-no-masking",
               "sharp-no-debias", "sharp-no-dedup", "fastv", "uniform", "random", "oracle",
               "evs"]  # fmt: skip
    assert sorted(results) == sorted(methods)
    unpruned = results["none"]["1.0"]["all"]
    assert unpruned["n"] == 16 and unpruned["needle_recall"] == 1.0
    # The trained model reads the clips it is shipped for: far above chance (0.2).
    assert report["unsolved"] == ["query/small"]
    shipped = results["none"]["1.0"]["shipped"]
    assert shipped["n"] == 14 and shipped["accuracy"] >= 0.75
    quarter = {m: results[m]["0.25"]["all"] for m in methods if m != "none"}
    # Same budget for everyone, vLLM's EVS included: 128 video tokens -> 32.
    assert {q["prompt_tokens"] for q in quarter.values()} == {unpruned["prompt_tokens"] - 96}
    # The oracle is handed the needle's tokens: only broken plumbing of oracle_tokens
    # (settings to the worker, indices to the report) can make it miss.
    assert quarter["oracle"]["needle_recall"] == 1.0
    assert quarter["evs"]["needle_recall"] is None  # stock vLLM reports no selection
    assert quarter["sharp"]["needle_recall"] >= quarter["uniform"]["needle_recall"] + 0.3
    # Every cell keeps each clip's outcome, in the order of `clip_cells`, for paired
    # comparisons.
    assert len(report["clip_cells"]) == 16
    for method in quarter:
        outcomes = results[method]["0.25"]["outcomes"]
        assert len(outcomes) == 16 and sum(outcomes) / 16 == pytest.approx(
            quarter[method]["accuracy"], abs=1e-4
        )
