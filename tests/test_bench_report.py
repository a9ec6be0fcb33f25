"""bench/report.py: the READMEs' figures match the committed results (CI fails on a
mismatch), and a result whose sources moved on is listed as stale."""

import json
import subprocess
import sys

from bench import figures, report

from .conftest import REPO


def test_every_marked_figure_matches_its_committed_result():
    run = subprocess.run(
        [sys.executable, "-m", "bench.report", "--check"], cwd=REPO, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_figure_is_rendered_between_its_markers_and_an_unknown_one_is_named():
    figures.FIGURES["test-answer"] = lambda: "| answer |\n|---|\n| 42 |"
    try:
        text = (
            "intro\n<!-- figure: test-answer -->\nold\n<!-- /figure -->\n"
            "<!-- figure: nope -->\n<!-- /figure -->\n"
        )
        rendered, unknown = report.render_blocks(text)
    finally:
        del figures.FIGURES["test-answer"]
    block = "<!-- figure: test-answer -->\n| answer |\n|---|\n| 42 |\n<!-- /figure -->"
    assert rendered.startswith(f"intro\n{block}")
    assert "old" not in rendered and unknown == ["no renderer for figure 'nope'"]


def git(repo, *command):
    run = subprocess.run(["git", *command], cwd=repo, check=True, capture_output=True, text=True)
    return run.stdout.strip()


def test_results_are_stale_when_their_sources_changed_after_their_commit(tmp_path, monkeypatch):
    repo, results = tmp_path, tmp_path / "bench" / "results"
    results.mkdir(parents=True)
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "t@t")
    git(repo, "config", "user.name", "t")
    (repo / "measured.py").write_text("one\n")
    (repo / "other.py").write_text("one\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "first")
    first = git(repo, "rev-parse", "HEAD")

    def result(name, **provenance):
        (results / f"{name}.json").write_text(json.dumps({"provenance": provenance} if provenance else {}))

    result("fresh", commit=first, dirty=False, sources=["other.py"])
    result("moved_on", commit=first, dirty=False, sources=["measured.py"])
    result("dirty", commit=first, dirty=True, sources=["other.py"])
    result("unknown")
    (repo / "measured.py").write_text("two\n")
    git(repo, "commit", "-qam", "change what moved_on measures")
    monkeypatch.setattr(report, "REPO", repo)
    monkeypatch.setattr(report, "RESULTS", results)
    stale = report.stale_results()
    assert [line.split(":")[0] for line in stale] == [
        "bench/results/dirty.json", "bench/results/moved_on.json", "bench/results/unknown.json"
    ]  # fmt: skip
    assert "change what moved_on measures" in stale[1]
