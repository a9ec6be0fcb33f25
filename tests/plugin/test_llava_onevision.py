"""LLaVA-OneVision on its tiny offline build, both engines in fp32: the ShaRP class with
nothing pruned is the stock model; counts shrink exactly (kept frame tokens plus the
newline); kept indices and the pruned prefill's log-probs equal an outside reference
(HF transformers, tests/plugin/llava_reference.py); the caches and the refusals behave
as on Qwen2.5-VL."""

import math

import pytest
import torch

from sharp_plugin.core import SharpSettings, kept_count, select_tokens

from ..media import noise_video, slides_video
from . import engine_helpers
from .engine_helpers import (
    BF16_LOGPROB_TOLERANCE,
    FP32_LOGPROB_TOLERANCE,
    generate,
    new_report_id,
    prompt_logprobs,
    report,
    request,
)
from .llava_reference import LlavaReference

pytestmark = pytest.mark.engine

FRAMES, SIDE = 16, 112  # 16 frames of 4 x 4 pooled tokens: N = 256, then one newline
NUM_TOKENS = 256
QUESTION = "What colour is the circle?"


def llava_prompt(question: str = QUESTION) -> str:
    return f"<|im_start|>user <video>\n{question}<|im_end|>\n<|im_start|>assistant\n"


def video(seed: int):
    return noise_video(seed, frames=FRAMES, size=SIDE)


def video_placeholders(llm, output) -> int:
    return output.prompt_token_ids.count(llm.get_tokenizer().convert_tokens_to_ids("<video>"))


@pytest.fixture(scope="module")
def reference(tiny_llava_dir):
    return LlavaReference(tiny_llava_dir)


def _with_logprobs(llm, req):
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=6, temperature=0.0, prompt_logprobs=0, seed=0)
    (output,) = llm.generate([req], params, use_tqdm=False)
    return output


@pytest.mark.parametrize("sharp", [None, {"method": "sharp", "retention": 1.0}], ids=["no-settings", "r=1.0"])
def test_unpruned_is_the_stock_model(sharp_llava_llm, stock_llava_llm, sharp):
    media = {"video": video(0)}
    stock = _with_logprobs(stock_llava_llm, request(llava_prompt(), media))
    ours = _with_logprobs(sharp_llava_llm, request(llava_prompt(), media, sharp))
    assert ours.prompt_token_ids == stock.prompt_token_ids
    assert video_placeholders(sharp_llava_llm, ours) == NUM_TOKENS + 1
    assert ours.outputs[0].token_ids == stock.outputs[0].token_ids
    worst = max(
        abs(a - b)
        for a, b in zip(prompt_logprobs(stock), prompt_logprobs(ours), strict=True)
        if math.isfinite(a)
    )
    assert worst < 1e-5, f"prompt log-probs differ by up to {worst}"


@pytest.mark.parametrize("method", ["sharp", "fastv", "uniform"])
def test_counts_shrink_exactly(sharp_llava_llm, method):
    engine_helpers.check_counts_shrink_exactly(
        sharp_llava_llm,
        lambda settings, rid: request(llava_prompt(), {"video": video(1)}, settings, rid),
        method,
        NUM_TOKENS,
        lambda output: video_placeholders(sharp_llava_llm, output),
        1,
    )


SETTINGS = {
    "fastv": {"method": "fastv", "retention": 0.25, "prune_layer": 2},
    "sharp, black prior by the question, segments, dedup": {
        "method": "sharp", "retention": 0.25, "prune_layer": 2, "segment_frames": 4,
        "debias": "black", "prior_query": "question", "lam": 1.0, "dedup_threshold": 0.9,
    },
    "sharp, mean prior, divide, layer 1": {
        "method": "sharp", "retention": 0.1, "prune_layer": 1, "segment_frames": 2,
        "debias": "mean", "calibration": "divide", "dedup_threshold": 0.8,
    },
}  # fmt: skip


@pytest.mark.parametrize("name", list(SETTINGS))
def test_kept_indices_match_an_outside_reference(sharp_llava_llm, reference, name):
    settings = SETTINGS[name]
    frames, _ = media = video(40)
    rid = new_report_id()
    generate(sharp_llava_llm, request(llava_prompt(), {"video": media}, settings, rid))
    (inside,) = report(sharp_llava_llm, rid)
    assert inside.fallback is None

    prefix, suffix, visual, newline, black, per_frame = reference.prepare(llava_prompt(), frames)
    parsed = SharpSettings(**settings)
    scorer = reference.scoring_pass(prefix, suffix, newline, per_frame, parsed.prune_layer)
    outside = select_tokens(
        parsed, visual, scorer, lambda frames_per_segment: scorer(black, frames_per_segment).scores
    )
    assert inside.selection.kept_indices == outside.kept.tolist()


@pytest.mark.parametrize("name", ["fastv", "sharp, mean prior, divide, layer 1"])
def test_a_later_video_is_scored_after_the_earlier_videos_kept_tokens(sharp_llava_llm, reference, name):
    """Two videos in one prompt arrive in one embed call: the second one's scoring pass
    waits for the first one's selection and has its kept tokens and newline before it,
    as the prompt does. Both selections equal the outside reference built that way."""
    settings = SETTINGS[name]
    (frames_a, _) = first = video(70)
    (frames_b, _) = second = video(71)
    prompt = "<|im_start|>user <video><video>\nWhat happens?<|im_end|>\n<|im_start|>assistant\n"
    rid = new_report_id()
    generate(sharp_llava_llm, request(prompt, {"video": [first, second]}, settings, rid))
    inside_a, inside_b = report(sharp_llava_llm, rid)
    assert (inside_a.context_missing, inside_b.context_missing) == (0, 0)

    ids = reference.processor.tokenizer(prompt)["input_ids"]
    at = ids.index(reference.config.video_token_index)  # the first video; the second is at + 1
    suffix = ids[at + 2 :]  # each video's scoring suffix drops the other video's placeholder
    parsed = SharpSettings(**settings)
    visual_a, newline = reference.video_rows(frames_a)
    visual_b, _ = reference.video_rows(frames_b)
    per_frame = visual_a.shape[0] // FRAMES

    def kept(prefix, visual):
        scorer = reference.scoring_pass(prefix, suffix, newline, per_frame, parsed.prune_layer)
        return select_tokens(parsed, visual, scorer).kept

    kept_a = kept(ids[:at], visual_a)
    assert inside_a.selection.kept_indices == kept_a.tolist()
    prefix_b = torch.cat([reference.embed(ids[:at]), visual_a[kept_a], newline])
    assert inside_b.selection.kept_indices == kept(prefix_b, visual_b).tolist()


# Measured on the tiny model (max |difference| over the prompt): fp32 engine 5e-7, bf16
# engine 3e-3. Giving the kept tokens their unpruned positions instead moves the
# log-probs by 4e-3, which the fp32 bound catches 40 times over and the bf16 bound does
# not.


@pytest.mark.parametrize(
    ("engine", "tolerance"),
    [("sharp_llava_llm", FP32_LOGPROB_TOLERANCE), ("sharp_llava_llm_bf16", BF16_LOGPROB_TOLERANCE)],
)
def test_pruned_prefill_equals_a_reference_forward_at_consecutive_positions(
    request, reference, engine, tolerance
):
    """The pruned prefill's prompt log-probs against HF's forward over the same prompt
    [prefix | kept frame tokens | newline | suffix] at consecutive positions, the
    placement this family serves (docs/method.md). In fp32 the same forward with each
    token at its unpruned position is far outside the tolerance, so the test tells the
    two placements apart."""
    llm = request.getfixturevalue(engine)  # pytest's request: the engine fixture by name
    frames, _ = media = video(42)
    rid = new_report_id()
    output = _with_logprobs(
        llm,
        engine_helpers.request(llava_prompt(), {"video": media}, {"method": "sharp", "retention": 0.25}, rid),
    )
    (inside,) = report(llm, rid)
    kept = torch.tensor(inside.selection.kept_indices)
    ids = list(output.prompt_token_ids)
    prefix, _, visual, newline, _, _ = reference.prepare(llava_prompt(), frames)
    served = prompt_logprobs(output)
    consecutive = reference.prompt_logprobs(ids, len(prefix), visual, newline, kept)
    original = reference.prompt_logprobs(ids, len(prefix), visual, newline, kept, original_positions=True)
    agreement = float((served - consecutive).abs().max())
    choice = float((consecutive - original).abs().max())
    print(f"{engine}: served vs reference {agreement:.2e}; consecutive vs unpruned positions {choice:.2e}")
    assert agreement < tolerance
    if tolerance == FP32_LOGPROB_TOLERANCE:
        assert choice > 10 * tolerance


def test_a_new_question_gets_a_new_selection_and_the_same_request_a_cache_hit(sharp_llava_llm):
    media, settings = {"video": video(50)}, {"method": "sharp", "retention": 0.25}
    engine_helpers.check_new_question_new_selection(
        sharp_llava_llm,
        lambda question, rid: request(llava_prompt(question), media, settings, rid),
        (QUESTION, "Where does it move?"),
    )


@pytest.mark.parametrize(
    ("settings", "field"),
    [({"retention": 1.5}, "retention"), ({"method": "sharp", "prune_layer": 9}, "prune_layer")],
)
def test_invalid_settings_are_refused_by_field_and_the_engine_keeps_serving(sharp_llava_llm, settings, field):
    with pytest.raises(ValueError, match=rf"sharp\.{field}:"):
        generate(sharp_llava_llm, request(llava_prompt(), {"video": video(60)}, settings))
    (output,) = generate(
        sharp_llava_llm,
        request(llava_prompt(), {"video": video(61)}, {"method": "uniform", "retention": 0.5}),
    )
    assert video_placeholders(sharp_llava_llm, output) == kept_count(0.5, NUM_TOKENS) + 1


def test_the_vision_tower_in_chunks_of_frames_changes_nothing(sharp_llava_llm):
    """`sharp_tower_chunk_patches` on LLaVA-OneVision: its tower embeds each frame alone,
    so chunks of 5 frames (16 = 5 + 5 + 5 + 1) give the same selection and answer as the
    whole video, and one newline row (the kept count is the same)."""
    media = {"video": video(60)}
    outputs, kept, calls = [], [], []
    sharp_llava_llm.collective_rpc(_spy_on_tower_frames, args=(True,))
    try:
        # `seed` is part of the item's identity: the second run is not an encoder-cache hit.
        for seed, frames_per_chunk in ((1, 5), (2, 0)):
            sharp_llava_llm.collective_rpc(_set_tower_chunk_frames, args=(frames_per_chunk,))
            settings = {"method": "sharp", "retention": 0.25, "seed": seed}
            report_id = new_report_id()
            (output,) = generate(
                sharp_llava_llm, request(llava_prompt(), media, settings, report_id), max_tokens=8
            )
            outputs.append(output)
            kept.append(report(sharp_llava_llm, report_id)[0].selection.kept_indices)
            (frames,) = sharp_llava_llm.collective_rpc(_spy_on_tower_frames, args=(True,))
            calls.append(frames)
    finally:
        sharp_llava_llm.collective_rpc(_set_tower_chunk_frames, args=(None,))
        sharp_llava_llm.collective_rpc(_spy_on_tower_frames, args=(False,))
    # Frames per call of the tower: the video, then (when not cached) the black
    # prior's one frame.
    assert calls[0][:4] == [5, 5, 5, 1] and set(calls[0][4:]) <= {1}, calls
    assert calls[1][:1] == [FRAMES] and set(calls[1][1:]) <= {1}, calls
    assert kept[0] == kept[1]
    assert outputs[0].prompt_token_ids == outputs[1].prompt_token_ids
    assert outputs[0].outputs[0].token_ids == outputs[1].outputs[0].token_ids


def _set_tower_chunk_frames(worker, frames: int | None) -> None:
    """Chunks of `frames` frames (0: whole), with the vision cache off, so that every
    run embeds the video; None: the engine's defaults and its cache again."""
    from sharp_plugin.vllm.vision_tower import DEFAULT_CHUNK_PATCHES

    tower = worker.model_runner.model.sharp_tower
    if frames is None:  # the engine as it was, for the tests after this one
        tower.chunk_patches = DEFAULT_CHUNK_PATCHES
        tower.cache = tower._test_cache
        return
    if not hasattr(tower, "_test_cache"):
        tower._test_cache = tower.cache
    tower.cache = None
    vision = worker.model_runner.model.config.vision_config
    tower.chunk_patches = frames * (vision.image_size // vision.patch_size) ** 2


def _spy_on_tower_frames(worker, on: bool) -> list[int]:
    """A spy (it calls through) on the stock per-frame features: the frames of each call
    since the last read, returned; `on=False` removes it."""
    from vllm.model_executor.models.llava_onevision import LlavaOnevisionForConditionalGeneration as Stock

    model = worker.model_runner.model
    seen = getattr(model, "_test_tower_frames", [])
    if not on:
        Stock._video_pixels_to_features = model._test_stock_features
        return seen
    if not hasattr(model, "_test_stock_features"):
        original = model._test_stock_features = Stock._video_pixels_to_features

        def counted(self, tower, pixel_values):
            model._test_tower_frames.append(int(pixel_values.shape[0]))
            return original(self, tower, pixel_values)

        Stock._video_pixels_to_features = counted
    model._test_tower_frames = []
    return seen


def test_static_frames_are_skipped_and_the_prefill_equals_the_reference(sharp_llava_llm, reference):
    """skip_static on a slideshow that changes at frames 5 and 11 (a group is one frame
    here): the other 13 frames never reach the tower, and the prompt log-probs equal HF's
    forward over the kept tokens at consecutive positions, the newline after them."""
    frames, _ = media = slides_video(12, FRAMES, {5, 11}, group_frames=1, size=SIDE)
    rid = new_report_id()
    settings = {"method": "sharp", "retention": 0.25, "skip_static": True}
    output = _with_logprobs(
        sharp_llava_llm, engine_helpers.request(llava_prompt(), {"video": media}, settings, rid)
    )
    (inside,) = report(sharp_llava_llm, rid)
    assert inside.groups_skipped == FRAMES - 3
    kept = torch.tensor(inside.selection.kept_indices)
    assert set((kept // 16).tolist()) <= {0, 5, 11} and kept.numel() == kept_count(0.25, 3 * 16)
    prefix, _, visual, newline, _, _ = reference.prepare(llava_prompt(), frames)
    served = prompt_logprobs(output)
    expected = reference.prompt_logprobs(list(output.prompt_token_ids), len(prefix), visual, newline, kept)
    torch.testing.assert_close(served, expected, atol=FP32_LOGPROB_TOLERANCE, rtol=0)
