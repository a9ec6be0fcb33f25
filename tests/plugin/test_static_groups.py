"""Static groups skipped before the vision tower, and `retention: "auto"`, on Qwen2.5-VL
(the tiny model, fp32): a skipped group never reaches the tower and none of its tokens
is kept; the pruned prefill over the kept tokens equals HF's forward at their original
positions; a video with nothing static selects exactly as without the setting; `auto`
keeps the count its rule gives, written out here from docs/method.md. Qwen3-VL and
LLaVA-OneVision have the same checks in their own files."""

import pytest
import torch

from sharp_plugin.core import kept_count

from ..media import chat_prompt, noise_video, slides_video
from . import engine_helpers
from .engine_helpers import FP32_LOGPROB_TOLERANCE, new_report_id, prompt_logprobs, report, video_pads
from .hf_reference import HFReference

pytestmark = pytest.mark.engine

# 8 groups of 8 x 8 tokens (16 frames of 224², 2 frames a group): N = 512.
GROUPS, PER_GROUP = 8, 64
CHANGES = {3, 5}  # new slides; every other group but the first repeats the one before
STATIC = [1, 2, 4, 6, 7]
PROMPT = chat_prompt("<video>", "What colour is the circle?")


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    return HFReference(tiny_model_dir)


def _run(llm, media, settings, prompt=PROMPT, logprobs=False):
    from vllm import SamplingParams

    rid = new_report_id()
    params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0 if logprobs else None)
    req = engine_helpers.request(prompt, {"video": media}, settings, rid)
    (output,) = llm.generate([req], params, use_tqdm=False)
    (inside,) = report(llm, rid)
    return output, inside


def _record_tower_grids(worker) -> None:
    """Spy (calls through): the grid of every vision-tower run."""
    model = worker.model_runner.model
    original = type(model)._process_video_input
    model._test_tower_grids = []

    def recorded(video_input):
        model._test_tower_grids += video_input["video_grid_thw"].tolist()
        return original(model, video_input)

    model._process_video_input = recorded


def _tower_grids(worker) -> list[list[int]]:
    model = worker.model_runner.model
    del model._process_video_input
    return model._test_tower_grids


def test_static_groups_never_reach_the_tower_and_none_of_their_tokens_is_kept(sharp_llm_fp32):
    media = slides_video(1, GROUPS, CHANGES)
    sharp_llm_fp32.collective_rpc(_record_tower_grids)
    output, inside = _run(sharp_llm_fp32, media, {"method": "sharp", "retention": 0.25, "skip_static": True})
    (grids,) = sharp_llm_fp32.collective_rpc(_tower_grids)
    assert grids == [[GROUPS - len(STATIC), 16, 16]]  # the three groups that changed, 16 x 16 patches each
    assert inside.groups_skipped == len(STATIC) and inside.redundancy.skipped_groups == STATIC
    assert inside.video_tokens == GROUPS * PER_GROUP and inside.tower_ms > 0
    kept_groups = {index // PER_GROUP for index in inside.selection.kept_indices}
    assert kept_groups <= {0, *CHANGES}
    # Their tokens count as pruned before the selection: k of the 192 left.
    expected = kept_count(0.25, (GROUPS - len(STATIC)) * PER_GROUP)
    assert inside.video_tokens_kept == video_pads(output, sharp_llm_fp32.get_tokenizer()) == expected


def test_the_pruned_prefill_equals_a_reference_forward_over_the_kept_tokens(sharp_llm_fp32, reference):
    """HF's forward over the same kept tokens, each at its original M-RoPE position: the
    skipped groups move nobody's position, and the tower's output for a kept group does
    not depend on the groups left out."""
    frames, metadata = media = slides_video(2, GROUPS, CHANGES)
    output, inside = _run(
        sharp_llm_fp32, media, {"method": "sharp", "retention": 0.25, "skip_static": True}, logprobs=True
    )
    assert inside.groups_skipped == len(STATIC)
    prefix, _, grid, t_scale, visual, _ = reference.prepare(PROMPT, frames, metadata["fps"])
    kept = torch.tensor(inside.selection.kept_indices)
    ids = list(output.prompt_token_ids)
    expected = reference.prompt_logprobs(ids, len(prefix), visual, kept, grid, t_scale)
    torch.testing.assert_close(prompt_logprobs(output), expected, atol=FP32_LOGPROB_TOLERANCE, rtol=0)


def test_with_nothing_static_the_selection_is_the_same(sharp_llm_fp32):
    media = noise_video(3, fps=2.0)
    settings = {"method": "sharp", "retention": 0.25, "segment_frames": 2}
    _, plain = _run(sharp_llm_fp32, media, settings)
    _, skipping = _run(sharp_llm_fp32, media, {**settings, "skip_static": True})
    assert skipping.groups_skipped == 0 and skipping.redundancy.skipped_groups == []
    assert skipping.selection.kept_indices == plain.selection.kept_indices


def test_named_groups_stay_and_a_follow_up_question_reuses_the_towers_output(sharp_llm_fp32):
    media = slides_video(4, GROUPS, CHANGES)
    settings = {"method": "sharp", "retention": 0.25, "skip_static": True, "keep_groups": [2, 7]}
    _, first = _run(sharp_llm_fp32, media, settings)
    assert first.redundancy.skipped_groups == [1, 4, 6]  # 2 stays, so 4 is compared to 3's slide
    _, follow_up = _run(sharp_llm_fp32, media, settings, prompt=chat_prompt("<video>", "And the square?"))
    assert follow_up.vision_cached and follow_up.tower_ms is None
    assert follow_up.redundancy.skipped_groups == [1, 4, 6]


@pytest.mark.parametrize("skip", [False, True])
def test_auto_keeps_its_rules_count(sharp_llm_fp32, skip):
    """docs/method.md: k = max_retention x the new tokens (the first group, and each
    token that changed from the group before), within [min_retention, max_retention]
    of N. Here the first group and the two slide changes are new: 3 x 64 tokens."""
    media = slides_video(5, GROUPS, CHANGES)
    settings = {"method": "sharp", "retention": "auto", "max_retention": 0.2, "skip_static": skip}
    output, inside = _run(sharp_llm_fp32, media, settings)
    new_tokens = 3 * PER_GROUP
    expected = round(0.2 * new_tokens)  # 38, within [0.02 x 512, 0.2 x 512]
    assert inside.redundancy.new_tokens == new_tokens
    assert inside.redundancy.novelty == pytest.approx(new_tokens / (GROUPS * PER_GROUP))
    assert inside.redundancy.retention_bounds == (0.02, 0.2)
    assert inside.video_tokens_kept == video_pads(output, sharp_llm_fp32.get_tokenizer()) == expected
    chosen_from = 3 * PER_GROUP if skip else GROUPS * PER_GROUP
    assert inside.retention == pytest.approx(expected / chosen_from)


def test_auto_is_held_to_its_bounds(sharp_llm_fp32):
    still = slides_video(6, GROUPS, set())  # one slide: only the first group is new
    _, inside = _run(sharp_llm_fp32, still, {"retention": "auto", "min_retention": 0.1})
    assert inside.video_tokens_kept == kept_count(0.1, GROUPS * PER_GROUP)  # 0.25 x 64 = 16 < 51
    busy = slides_video(7, GROUPS, set(range(1, GROUPS)))  # every token new
    _, inside = _run(sharp_llm_fp32, busy, {"retention": "auto", "max_retention": 0.3})
    assert inside.redundancy.novelty == 1.0
    assert inside.video_tokens_kept == kept_count(0.3, GROUPS * PER_GROUP)


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"skip_static": True, "keep_groups": [8]}, "keep_groups"),  # the video has 8 groups
        ({"retention": "auto", "min_retention": 0.5, "max_retention": 0.2}, "min_retention"),
        ({"skip_static": "yes"}, "skip_static"),
        ({"skip_static": True, "change_threshold": float("inf")}, "change_threshold"),
        ({"retention": "most"}, "retention"),
    ],
)
def test_bad_settings_are_refused_by_field_and_the_engine_keeps_serving(sharp_llm_fp32, settings, field):
    from sharp_plugin.core import SharpSettingsError

    with pytest.raises(SharpSettingsError) as refused:
        _run(sharp_llm_fp32, slides_video(8, GROUPS, CHANGES), settings)
    assert refused.value.field == field, str(refused.value)
    good = {"retention": 0.5, "skip_static": True}
    _, inside = _run(sharp_llm_fp32, slides_video(9, GROUPS, CHANGES), good)
    assert inside.groups_skipped == len(STATIC)
