"""bench/packed_scoring.py in its small mode: it runs, writes its JSON, and each packed
result is its lone pass (the bench's speed figures are not asserted here)."""

import json

from .conftest import run_small_bench


def test_packed_scores_equal_lone_passes_and_the_json_is_written(tmp_path):
    run = run_small_bench("packed_scoring", tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "packed_scoring.json").read_text())
    rows = report["rows"]
    assert [(r["videos"], r["tokens_per_video"]) for r in rows] == [(1, 256), (3, 256)]
    for row in rows:
        assert row["max_score_difference"] <= 1e-3 * row["max_score"], row
        assert len(row["one_per_video_ms"]) == len(row["packed_ms"]) == 2
        low, high = row["speedup"]["ci95"]
        assert 0 < low <= row["speedup"]["median"] <= high
    assert report["provenance"]["commit"] and report["provenance"]["sources"]
    assert "| 3 x 256 |" in run.stdout
