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
    nothing = {"stored_files": 0, "partial_uploads": 0, "temporary_media": 0}
    assert report["left_behind"] == nothing, report["left_behind_paths"]
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


def test_small_soak_with_faults_recovers_from_each_engine_kill_and_loses_nothing_else(tmp_path):
    """--faults: the engine core is killed twice under load while slow clients trickle;
    the server comes back each time by itself, only requests in flight at a kill fail
    (each with an error, none cut short silently), and nothing leaks."""
    run = run_small_bench("soak", tmp_path, 900, "--faults")
    report = json.loads((tmp_path / "soak_faults.json").read_text())
    faults = report["faults"]
    assert len(faults["kills_s"]) == 2 and all(s is not None and s < 60 for s in faults["recovery_s"]), faults
    assert faults["requests_lost_otherwise"] == 0, faults["lost_examples"]
    assert faults["requests_lost_in_flight_at_a_kill"] <= 2 * 4  # at most the concurrency, twice
    assert faults["streams_or_answers_cut_short_without_an_error"] == 0
    assert faults["tricklers"]["cut_off"] > 0 and faults["tricklers"]["outlived_the_deadline"] == 0
    counted = faults["metrics_against_the_client"]
    assert counted["engine_deaths"] == {"server": 2.0, "client": 2}
    assert counted["engine_restarts"] == {"server": 2.0, "client": 2}
    assert [status for _, status in faults["health_changes"]] == [200, 503, 200, 503, 200]
    kinds = report["by_kind"]
    assert all(kinds[k]["requests"] > 0 for k in ("followup", "preset", "bad_upload"))
    assert set(kinds["bad_upload"]["outcomes"]) == {"4xx"}
    assert set(kinds["bad_upload"]["statuses"]) == {"413", "415"}  # oversized, undecodable
    nothing = {"stored_files": 0, "partial_uploads": 0, "temporary_media": 0}
    assert report["left_behind"] == nothing, report["left_behind_paths"]
    assert report["tracebacks_in_log"] == 0 and report["healthy_at_end"]
    assert run.returncode == 0 and report["passed"], (report["targets"], run.stdout[-3000:])
