"""CI mode of bench/decode.py: every arm decodes a generated clip in interleaved rounds,
through a worker process per decord build, and each ratio to the full decode is taken
within its round."""

import json

from .conftest import run_small_bench


def test_small_decode_run_times_every_arm_against_the_full_decode_of_its_round(tmp_path):
    run = run_small_bench("decode", tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "decode.json").read_text())
    sources = ["server/media/video.py", "server/media/decoders", "bench/decode.py"]
    assert report["provenance"]["sources"] == sources
    (rows,) = report["arms"].values()
    (build,) = report["builds"].values()
    pyav = report["decoders"]["pyav"]
    expected = {
        f"{d}, {s}, {r} reader(s)" for d in (build, pyav) for s in ("uniform", "keyframes") for r in (1, 2)
    }
    assert expected | {"full decode (decord, 1 reader)", "vLLM's OpenCV loader"} <= set(rows)
    full = rows["full decode (decord, 1 reader)"]["of_full_decode"]
    assert full["rounds"] == [1.0, 1.0]
    for name, row in rows.items():
        assert len(row["runs_s"]) == report["rounds"] == 2
        low, high = row["of_full_decode"]["ci95"]
        assert 0 < low <= row["of_full_decode"]["median"] <= high, name
    # 4 frames at keyframes (8 GOPs in the clip) decode far less than every frame.
    assert rows[f"{build}, keyframes, 1 reader(s)"]["of_full_decode"]["median"] < 0.5
    assert len(report["targets"]) == 6 and all(isinstance(t["met"], bool) for t in report["targets"].values())
    # Every decoder's frames are checked against a sequential decode: on this clip all agree.
    (checked,) = report["frames_check"].values()
    assert set(checked) == {build, pyav}
    assert all(c["wrong"] == 0 and c["of"] == 4 and c["max_difference"] < 8 for c in checked.values()), (
        checked
    )
    assert report["torchcodec"] == "measured" or report["torchcodec"].startswith("not measured: ")
    assert (tmp_path / "decode.png").stat().st_size > 10_000
