"""CI mode of bench/long_video.py: the needle bench end to end on the real engine (1 and
8 clips, 2 needles, the order and count questions at 8 clips, no EVS). At 8 clips the
unpruned video (1,024 tokens) no longer fits the 1,024-token context: only the pruned
arms run, and each prompt holds its kept tokens. The bench's own measurements are
checked for what must hold whatever the machine: the oracle's recall, the kept counts,
stages measured for every request, and the pixels handed over growing with the video;
and the long-video proxy's answers through vLLM on the tokens the oracle keeps."""

import json

import pytest

from sharp_plugin.core import kept_count

from .conftest import run_small_bench

pytestmark = pytest.mark.engine

CONTEXT, CLIP_TOKENS = 1024, 128
PRUNED = ["sharp", "sharp-local", "sharp-block-causal", "sharp-segments", "fastv", "uniform", "oracle"]


def test_small_long_video_run_serves_past_the_context_and_measures_every_stage(tmp_path):
    run = run_small_bench("long_video", tmp_path, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "long_video.json").read_text())
    assert (tmp_path / "long_video.png").stat().st_size > 10_000
    assert "proxy" in (tmp_path / "long_video.md").read_text().lower()
    results = report["results"]
    assert sorted(results) == sorted(["none", *PRUNED])
    assert sorted(results["none"]) == ["1"], "the unpruned 8-clip video does not fit the context"
    for arm in PRUNED:
        for length in ("1", "8"):
            cell = results[arm][length]
            tokens = int(length) * CLIP_TOKENS
            assert cell["n"] == 2 and cell["video_tokens"] == tokens and cell["fallbacks"] == 0
            assert cell["tower_ms"] > 0 and cell["selection_peak_mib"] is not None
            if arm in (
                "sharp",
                "sharp-local",
                "sharp-block-causal",
                "sharp-segments",
                "fastv",
            ):  # a scoring pass ran
                assert cell["selection_ms"] > 0
            # Paired with the oracle over the same two needles.
            assert arm == "oracle" or cell["vs_oracle"]["n"] == 2
            assert arm == "sharp" or cell["vs_sharp"]["n"] == 2  # and with ShaRP's default
        long = results[arm]["8"]
        # Only the kept tokens are in the prompt: every arm keeps the same count.
        assert long["prompt_tokens"] < CONTEXT
        text_tokens = results["none"]["1"]["prompt_tokens"] - CLIP_TOKENS
        assert long["prompt_tokens"] == text_tokens + kept_count(0.1, 8 * CLIP_TOKENS)
        # The processor hands the worker the pixels: 8x the frames, about 8x the bytes
        # (from the rows: the summary rounds to 0.1 MiB; the item's own fields, a few KiB
        # of prompt ids, do not grow with the video).
        handed = {r["length"]: r["handed_over_mib"] for r in report["rows"] if r["arm"] == arm}
        assert handed[8] == pytest.approx(8 * handed[1], rel=0.02)
    rows = [r for r in report["rows"] if r["arm"] == "oracle"]
    assert rows and all(r["needle_recall"] == 1.0 for r in rows)  # handed the needle: only plumbing can miss
    colour = [r for r in report["rows"] if r["kind"] == "colour"]
    assert {r["depth"] for r in colour if r["length"] == 8} == {0.0, 0.5}  # needles placed apart
    assert {(r["arm"], r["needle"]) for r in colour if r["length"] == 8} == {
        (arm, needle) for arm in PRUNED for needle in (0, 1)
    }  # per-needle outcomes, every arm on every needle
    # The long-video proxy reads the kept tokens at their places: handed the needle, it
    # answers each of these held-out videos right (fixed videos: no chance involved).
    for row in report["rows"]:
        if row["arm"] == "oracle" or (row["arm"] == "none" and row["kind"] == "colour"):
            assert row["correct"], row
    for kind in ("first", "count"):
        cells = report["kinds"][kind]
        assert sorted(cells) == sorted(PRUNED), "the unpruned 8-clip video does not fit"
        assert all(cells[arm]["8"]["n"] == 2 for arm in PRUNED)
        assert cells["oracle"]["8"]["needle_recall"] == 1.0
