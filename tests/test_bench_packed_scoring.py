"""bench/packed_scoring.py in its small mode: it runs, writes its JSON, and each packed
result is its lone pass (the bench's speed figures are not asserted here)."""

import json

from .conftest import run_small_bench


def test_packed_scores_equal_lone_passes_and_the_json_is_written(tmp_path):
    out = tmp_path / "packed.json"
    run = run_small_bench("packed_scoring.py", out, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["videos"], r["tokens_per_video"]) for r in rows] == [(1, 256), (3, 256)]
    for row in rows:
        assert row["max_score_difference"] <= 1e-3 * row["max_score"], row
        assert row["one_per_video_ms"] > 0 and row["packed_ms"] > 0
    assert "| 3 x 256 |" in run.stdout
