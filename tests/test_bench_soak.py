"""CI mode of bench/soak.py: a bounded mixed soak of the real server (streams, uploads,
disconnects, hostile requests) with no server error, no leak and nothing left running."""

import json

import pytest

from .conftest import run_small_bench

pytestmark = pytest.mark.engine


def test_small_soak_has_no_server_errors_leaks_or_unfinished_requests(tmp_path):
    run = run_small_bench("soak", tmp_path, timeout=900)
    report = json.loads((tmp_path / "soak.json").read_text())
    assert report["requests"] == 80
    assert report["server_errors"] == 0 and report["server_counted_5xx"] == 0, report["by_status"]
    assert report["unexpected_outcomes"] == 0 and report["client_side_errors"] == 0, report["by_kind"]
    assert report["left_behind"] == {"stored_files": 0, "partial_uploads": 0, "temporary_media": 0}
    assert report["unfinished_engine_requests"] == 0 and report["healthy_at_end"]
    assert report["tracebacks_in_log"] == 0
    # Every kind of request ran, and the hostile ones were all refused with a 4xx.
    kinds = report["by_kind"]
    assert all(kinds[k]["requests"] > 0 for k in ("chat", "stream", "upload", "disconnect", "bad"))
    assert set(kinds["bad"]["outcomes"]) == {"4xx"}
    assert kinds["disconnect"]["outcomes"].get("finished before leaving", 0) == 0
    assert len(report["rss_samples"]) > 5 and (tmp_path / "soak.png").stat().st_size > 5_000
    # Every target but RSS growth, which needs the full run's length (bench/README.md).
    assert run.returncode == 0 and report["passed"], (report["targets"], run.stdout[-3000:])
