"""CI mode of bench/redundancy.py: both parts end to end on the real engines (the proxy
model with ours and EVS's, the 7B-shaped bench model on a short video, 2 rounds). What is
asserted is what the machinery must get right, not speed: static groups are skipped
where the video is static and never where it moves, the kept counts follow the rules,
and every ratio carries its rounds and interval."""

import json

import pytest

from sharp_plugin.core import kept_count

from .conftest import run_small_bench

pytestmark = pytest.mark.engine


def test_small_redundancy_run_skips_static_groups_only_where_the_video_is_static(tmp_path):
    run = run_small_bench("redundancy", tmp_path, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "redundancy.json").read_text())
    assert (tmp_path / "redundancy.png").stat().st_size > 10_000
    quality = report["quality"]["summary"]
    for kind in ("still", "slides", "pan-rest"):
        assert quality[kind]["sharp r=0.1, skip"]["groups_skipped"] > 0, kind
    assert quality["moving"]["sharp r=0.1, skip"]["groups_skipped"] == 0
    assert quality["moving"]["sharp r=0.1"]["groups_skipped"] == 0  # only when asked
    for kind, arms in quality.items():
        assert arms["sharp r=0.1"]["kept"] == kept_count(0.1, 128), kind  # 8 groups of 16 tokens
        assert arms["unpruned"]["kept"] == 128
        assert arms["sharp r=0.1, skip"]["kept"] <= arms["sharp r=0.1"]["kept"]
        assert len(report["quality"]["outcomes"][kind]["auto"]) == report["quality"]["per_kind"]
        assert arms["sharp r=0.1"]["vs sharp r=0.1"] == {"difference": 0.0, "se": 0.0, "n": 6}
    speed = report["speed"]
    assert speed["rounds"] == 2 and speed["post_encoder_ceiling"] > 1
    for entry in speed["summary"].values():
        assert len(entry["skip_over_sharp"]["rounds"]) == 2
        for arm in entry["arms"].values():
            low, high = arm["ttft_ms"]["ci95"]
            assert 0 < low <= arm["ttft_ms"]["median"] <= high
    example = speed["example"]
    assert example["redundancy"]["skipped_groups"] and example["groups_skipped"] == len(
        example["redundancy"]["skipped_groups"]
    )
    assert sum(example["redundancy"]["changed_per_group"]) == example["redundancy"]["new_tokens"]
    assert set(report["targets"]) == {"still", "slides", "pan-rest", "moving", "shipped"}
    assert report["provenance"]["sources"][0] == "sharp_plugin"
