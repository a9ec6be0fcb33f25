"""bench/flops.py: the cost model agrees with FlopCounterMode on every family, and its
7B figures behave as the method says they must."""

import json
import subprocess
import sys

import pytest

from bench import flops

from .conftest import REPO


def test_the_cost_model_matches_flop_counter_mode_within_one_percent(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "bench.flops", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "flops.json").read_text())
    families = {row["model"] for row in report["validation"]}
    models = ("Qwen2.5-VL", "Qwen3-VL", "LLaVA-OneVision", "stand-in decoder")
    assert families == {f"{name} (reduced)" for name in models}
    # The scoring pass's formula is held to the product's own pass, as the stages to the models.
    assert {row["stage"] for row in report["validation"]} == {"vision", "lm", "scoring"}
    for row in report["validation"]:
        assert abs(row["error"]) < 0.01, row
    assert {p["model"] for p in report["operating_points"]} == set(flops.MODELS)


def test_seven_b_figures_follow_the_method():
    model = flops.load_models()["Qwen2.5-VL-7B"]
    video = flops.VideoShape(32, 448, 448)
    assert model.vision.tokens(video) == 4096
    k1, k2 = model.stages(video, 0.1, 1), model.stages(video, 0.1, 2)
    # A deeper scoring layer costs more; less retention saves more; the prior on a miss
    # is one more scoring pass, and a grid's first request also embeds one black group.
    assert k1["lm_speedup"] > k2["lm_speedup"] > model.stages(video, 0.25, 2)["lm_speedup"]
    one_group = model.vision.flops(flops.VideoShape(2, 448, 448))
    assert model.stages(video, 0.1, 2, prior="miss")["prior"] == k2["scoring"]
    assert model.stages(video, 0.1, 2, prior="cold")["prior"] == k2["scoring"] + one_group
    # The tower is linear in temporal groups (its attention stays inside a group): 16
    # groups cost exactly 16 times one, which is why one black group, tiled, is exact.
    assert one_group * 16 == k2["vision"]
    # The brief's ceilings at N = 4096, K = 2, r = 0.1: ~83% LM cut, ~6x LM, ~2.6x whole.
    assert 0.82 < k2["lm_cut"] < 0.85 and 5.5 < k2["lm_speedup"] < 6.2 and 2.5 < k2["whole_speedup"] < 2.7
    # Nothing after the tower beats (vision + LM) / vision.
    ceiling = k2["unpruned_whole"] / k2["vision"]
    assert model.stages(video, 1e-4, 1)["whole_speedup"] < ceiling < 4  # 3.8 (the brief: ~3.7)


def test_the_hour_long_example_and_the_segment_local_scoring_pass():
    hour = flops.long_video_example(flops.load_models())
    # 3,600 frames at 448^2: 1,800 temporal groups of 16 x 16 merged tokens.
    assert hour["video_tokens"] == 1800 * 256 == 460_800 and hour["kept"] == 23_040
    assert hour["prompt_tokens"] < 32_768 < hour["video_tokens"]
    # Local attention is linear in N: the pass costs about what the pruned prefill does,
    # an order of magnitude under the block-causal pass.
    assert hour["scoring_local"] * 10 < hour["scoring_block_causal"]
    decoder = flops.load_models()["Qwen2.5-VL-7B"].decoder
    # With one segment holding the whole video, local and block-causal are the same mask
    # (the dense count also charges the visual rows the query columns they cannot see).
    n = 4096
    assert decoder.scoring_pass_local(16, n, 24, n, 2) == pytest.approx(
        decoder.scoring_pass(16 + n + 24, 23, 2), rel=1e-3
    )
