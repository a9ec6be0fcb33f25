"""CI mode of bench/decode.py: every arm decodes the generated clip, in one run, and the
table compares each with the full decode of the same run."""

import json

from .conftest import run_small_bench


def test_small_decode_run_times_every_arm_against_the_full_decode(tmp_path):
    run = run_small_bench("decode", tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "decode.json").read_text())
    rows = report["rows"]
    assert any("OpenCV" in name for name in rows) and any("keyframes" in name for name in rows)
    for row in rows.values():
        assert row["median_s"] > 0 and row["of_full_decode"] > 0
    assert report["provenance"]["sources"] == ["server/media/video.py", "bench/decode.py"]
