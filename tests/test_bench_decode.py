"""CI mode of bench/decode.py: every arm decodes a generated clip in interleaved rounds,
through a worker process per decord build, and each ratio to the full decode is taken
within its round."""

import json

import av
import numpy as np
import pytest

from bench.decode import clip_path, forward_decode
from server.media import video

from .conftest import run_small_bench


def test_small_decode_run_times_every_arm_against_the_full_decode_of_its_round(tmp_path):
    run = run_small_bench("decode", tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "decode.json").read_text())
    assert report["provenance"]["sources"] == ["server/media/video.py", "bench/decode.py"]
    (rows,) = report["arms"].values()
    (build,) = report["builds"].values()
    expected = {f"{build}, {s}, {r} reader(s)" for s in ("uniform", "keyframes") for r in (1, 2)}
    expected |= {f"candidate: PyAV forward, uniform, {r} reader(s)" for r in (1, 2)}
    assert expected | {"full decode (decord, 1 reader)", "vLLM's OpenCV loader"} <= set(rows)
    full = rows["full decode (decord, 1 reader)"]["of_full_decode"]
    assert full["rounds"] == [1.0, 1.0]
    for name, row in rows.items():
        assert len(row["runs_s"]) == report["rounds"] == 2
        low, high = row["of_full_decode"]["ci95"]
        assert 0 < low <= row["of_full_decode"]["median"] <= high, name
    # 4 frames at keyframes (8 GOPs in the clip) decode far less than every frame.
    assert rows[f"{build}, keyframes, 1 reader(s)"]["of_full_decode"]["median"] < 0.5
    assert len(report["targets"]) == 3 and all(isinstance(t["met"], bool) for t in report["targets"].values())
    assert report["torchcodec"] == "measured" or report["torchcodec"].startswith("not measured: ")
    assert (tmp_path / "decode.png").stat().st_size > 10_000


@pytest.mark.parametrize("indices", [[15, 75, 135, 195], [0, 1, 59, 60, 61, 479], [30, 31, 32, 33]])
def test_the_forward_candidate_gives_a_full_decodes_frames(indices):
    """Seeking only past keyframes and skipping unreferenced frames changes no pixel:
    each frame equals the same frame of a plain decode of every frame."""
    clip = clip_path("16s-240p")  # 480 frames, a keyframe every 60
    keyframes = list(video.probe(clip).keyframes)
    with av.open(str(clip)) as container:
        every = [f.to_ndarray(format="rgb24", width=224, height=112) for f in container.decode(video=0)]
    got = forward_decode(clip, indices, 224, 112, keyframes)
    assert keyframes[:3] == [0, 60, 120]
    assert np.array_equal(got, np.stack([every[i] for i in indices]))


def test_the_forward_candidate_ends_on_a_wrong_keyframe_list():
    """Keyframes that are not (off by one here) cost a longer decode, never a loop."""
    clip = clip_path("16s-240p")
    wrong = [0, *(k + 1 for k in video.probe(clip).keyframes[1:])]
    assert forward_decode(clip, [75, 135, 400], 224, 112, wrong).shape == (3, 112, 224, 3)
