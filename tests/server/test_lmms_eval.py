"""CI mode of bench/lmms_eval_parity.py: lmms-eval 0.7.3, unchanged (its own venv,
`make install-lmms-eval`), against the running server on 20 proxy clips, choosing the
pruning by model name alone, beside bench/quality.py's in-process pass."""

import json
import subprocess
import sys

import pytest

from sharp_plugin.core import kept_count

from ..conftest import REPO

pytestmark = pytest.mark.engine

LMMS_EVAL = REPO / ".venv-lmms" / "bin" / "lmms-eval"
VIDEO_TOKENS = 128  # a proxy clip: 16 frames of 112^2


def test_lmms_eval_against_the_server_agrees_with_quality_py(server, tmp_path):
    assert LMMS_EVAL.exists(), "lmms-eval is not installed: run `make install-lmms-eval`"
    run = subprocess.run(
        [
            sys.executable, "-m", "bench.lmms_eval_parity", "--small",
            "--lmms-eval", str(LMMS_EVAL), "--base-url", server.base_url,
            "--runs", str(server.media_root / "lmms-eval"), "--out", str(tmp_path),
            "--presets", "none", "sharp-r10",
        ],
        capture_output=True, text=True, timeout=900, cwd=REPO,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    report = json.loads((tmp_path / "lmms_eval.json").read_text())
    assert report["lmms_eval_version"] == "0.7.3" and report["clips"] == 20
    assert sorted(report["results"]) == ["none", "sharp-r10"]
    for preset, row in report["results"].items():
        assert row["all"]["n"] == 20 and row["all"]["within_one_se"], (preset, row)
        assert row["all"]["lmms_eval"] >= 0.75, (preset, row)  # the shipped model, far above chance
    # The model name alone chose the pruning: every dropped video token is a dropped prompt token.
    tokens = report["lmms_eval_prompt_tokens"]
    assert tokens["none"] - tokens["sharp-r10"] == VIDEO_TOKENS - kept_count(0.1, VIDEO_TOKENS)
    assert "lmms-eval" in (tmp_path / "lmms_eval.md").read_text()
