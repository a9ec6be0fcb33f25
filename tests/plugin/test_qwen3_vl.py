"""Qwen3-VL on its tiny offline build (timestamp text between temporal groups, deepstack
features from two tower blocks, interleaved M-RoPE), both engines in fp32: the ShaRP
class with nothing pruned is the stock model; counts shrink exactly (kept tokens plus
every timestamp and vision-start/end row); kept indices and the pruned prefill's
log-probs equal an outside reference (HF transformers, tests/plugin/qwen3_reference.py);
the caches, earlier media and the refusals behave as on the other families."""

import math

import pytest
import torch

from sharp_plugin.core import SharpSettings, kept_count, select_tokens

from ..media import VIDEO_PAD, chat_prompt, noise_image, noise_video, slides_video
from . import engine_helpers
from .engine_helpers import (
    BF16_LOGPROB_TOLERANCE,
    FP32_LOGPROB_TOLERANCE,
    generate,
    new_report_id,
    report,
    request,
    video_pads,
)
from .qwen3_reference import Qwen3Reference

pytestmark = pytest.mark.engine

# 8 frames of 128²: 4 temporal groups of 4 x 4 merged tokens, N = 64, each group after
# its own timestamp text.
FRAMES, SIDE, FPS = 8, 128, 4.0
NUM_TOKENS = 64
QUESTION = "What colour is the circle?"


def prompt(question: str = QUESTION) -> str:
    return chat_prompt("<video>", question)


def video(seed: int):
    return noise_video(seed, frames=FRAMES, size=SIDE, fps=FPS)


@pytest.fixture(scope="module")
def reference(tiny_qwen3_dir):
    return Qwen3Reference(tiny_qwen3_dir)


@pytest.fixture(scope="module")
def text_rows(reference):
    """Rows of the video that are text (timestamps, vision-start/end of each group), from
    the HF processor's unpruned prompt."""
    frames, metadata = video(0)
    ids, positions, _, _ = reference.prepare(prompt(), frames, metadata)
    scorer = reference.scoring_pass(ids, positions, 1)
    return scorer.last - scorer.first + 1 - NUM_TOKENS


def _with_logprobs(llm, req, max_tokens=6):
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, prompt_logprobs=1, seed=0)
    (output,) = llm.generate([req], params, use_tqdm=False)
    return output


def _top(entry):
    """The most likely token and its log-prob at one prompt position."""
    token, logprob = next((t, lp) for t, lp in entry.items() if lp.rank == 1)
    return token, logprob.logprob


@pytest.mark.parametrize("sharp", [None, {"method": "sharp", "retention": 1.0}], ids=["no-settings", "r=1.0"])
def test_unpruned_is_the_stock_model(sharp_qwen3_llm, stock_qwen3_llm, text_rows, sharp):
    """Our prompt holds the video as one run of placeholders (the timestamp rows are
    embedded as text by the model), stock's has the timestamp tokens in place: every
    position's distribution must be the same, and so must every other token."""
    media = {"video": video(0)}
    stock = _with_logprobs(stock_qwen3_llm, request(prompt(), media))
    ours = _with_logprobs(sharp_qwen3_llm, request(prompt(), media, sharp))
    pad = sharp_qwen3_llm.get_tokenizer().convert_tokens_to_ids(VIDEO_PAD)
    assert len(ours.prompt_token_ids) == len(stock.prompt_token_ids)
    assert all(a == b or b == pad for a, b in zip(stock.prompt_token_ids, ours.prompt_token_ids, strict=True))
    assert video_pads(ours, sharp_qwen3_llm.get_tokenizer()) == NUM_TOKENS + text_rows
    assert ours.outputs[0].token_ids == stock.outputs[0].token_ids
    worst = 0.0
    pairs = zip(stock.prompt_logprobs[1:], ours.prompt_logprobs[1:], strict=True)
    for position, (theirs, mine) in enumerate(pairs, start=1):
        (top_theirs, lp_theirs), (top_mine, lp_mine) = _top(theirs), _top(mine)
        assert top_theirs == top_mine, f"position {position}: a different most likely token"
        worst = max(worst, abs(lp_theirs - lp_mine))
        token = stock.prompt_token_ids[position]
        if token == ours.prompt_token_ids[position] and math.isfinite(theirs[token].logprob):
            worst = max(worst, abs(theirs[token].logprob - mine[token].logprob))
    assert worst < 1e-5, f"prompt log-probs differ by up to {worst}"


@pytest.mark.parametrize("method", ["sharp", "fastv", "uniform"])
def test_counts_shrink_exactly(sharp_qwen3_llm, text_rows, method):
    engine_helpers.check_counts_shrink_exactly(
        sharp_qwen3_llm,
        lambda settings, rid: request(prompt(), {"video": video(1)}, settings, rid),
        method,
        NUM_TOKENS,
        lambda output: video_pads(output, sharp_qwen3_llm.get_tokenizer()),
        text_rows,
    )


SETTINGS = {
    "fastv": {"method": "fastv", "retention": 0.25, "prune_layer": 2},
    "sharp, black prior by the question, segments, dedup": {
        "method": "sharp", "retention": 0.25, "prune_layer": 2, "segment_frames": 2,
        "debias": "black", "prior_query": "question", "lam": 1.0, "dedup_threshold": 0.9,
    },
    "sharp, mean prior, divide, layer 1": {
        "method": "sharp", "retention": 0.1, "prune_layer": 1, "segment_frames": 1,
        "debias": "mean", "calibration": "divide", "dedup_threshold": 0.8,
    },
}  # fmt: skip


@pytest.mark.parametrize("name", list(SETTINGS))
def test_kept_indices_match_an_outside_reference(sharp_qwen3_llm, reference, name):
    """Layer 2 sees both deepstack levels added, layer 1 only the first."""
    settings = SETTINGS[name]
    frames, metadata = media = video(40)
    rid = new_report_id()
    generate(sharp_qwen3_llm, request(prompt(), {"video": media}, settings, rid))
    (inside,) = report(sharp_qwen3_llm, rid)
    assert inside.fallback is None

    ids, positions, visual, black = reference.prepare(prompt(), frames, metadata)
    parsed = SharpSettings(**settings)
    scorer = reference.scoring_pass(ids, positions, parsed.prune_layer)
    outside = select_tokens(parsed, visual, scorer, lambda groups: scorer(black, groups).scores)
    assert inside.selection.kept_indices == outside.kept.tolist()


# Measured on the tiny model (max |difference| over the prompt): fp32 engine 9.5e-7, bf16
# engine 3.3e-3. Leaving the deepstack features out of the reference moves the log-probs
# by 0.34, far outside either bound, so the test can tell.


@pytest.mark.parametrize(
    ("engine", "tolerance"),
    [("sharp_qwen3_llm", FP32_LOGPROB_TOLERANCE), ("sharp_qwen3_llm_bf16", BF16_LOGPROB_TOLERANCE)],
)
def test_pruned_prefill_equals_a_reference_forward_at_original_positions(
    request, reference, engine, tolerance
):
    """The pruned prefill's prompt log-probs against HF's forward over the unpruned
    prompt without the visual rows that were not kept: every timestamp row and kept
    token at its unpruned position, deepstack features on the kept rows."""
    llm = request.getfixturevalue(engine)  # pytest's request: the engine fixture by name
    frames, metadata = media = video(42)
    rid = new_report_id()
    settings = {"method": "sharp", "retention": 0.25, "segment_frames": 2}
    output = _with_logprobs(llm, engine_helpers.request(prompt(), {"video": media}, settings, rid))
    (inside,) = report(llm, rid)
    kept = torch.tensor(inside.selection.kept_indices)
    ids, positions, visual, _ = reference.prepare(prompt(), frames, metadata)
    served = engine_helpers.prompt_logprobs(output)
    outside = reference.prompt_logprobs(ids, positions, visual, kept, output.prompt_token_ids)
    agreement = float((served - outside).abs().max())
    without_deepstack = visual.clone()
    without_deepstack[:, reference.width :] = 0
    blind = reference.prompt_logprobs(ids, positions, without_deepstack, kept, output.prompt_token_ids)
    deepstack_effect = float((outside - blind).abs().max())
    print(f"{engine}: served vs reference {agreement:.2e}; deepstack's effect {deepstack_effect:.2e}")
    assert agreement < tolerance
    assert deepstack_effect > 10 * FP32_LOGPROB_TOLERANCE


def test_a_new_question_gets_a_new_selection_and_the_same_request_a_cache_hit(sharp_qwen3_llm):
    media, settings = {"video": video(50)}, {"method": "sharp", "retention": 0.25}
    engine_helpers.check_new_question_new_selection(
        sharp_qwen3_llm,
        lambda question, rid: request(prompt(question), media, settings, rid),
        (QUESTION, "Where does it move?"),
    )


def test_an_earlier_image_is_in_the_videos_scoring_context(sharp_qwen3_llm):
    """An image before the video (deepstack features and all) is part of its scoring
    pass: changing only the image changes the video's selection."""
    settings = {"method": "sharp", "retention": 0.25}
    two_media = chat_prompt("<image>", "<video>", QUESTION)
    kept = []
    for image_seed in (1, 2):
        rid = new_report_id()
        media = {"image": noise_image(image_seed, size=64), "video": video(55)}
        generate(sharp_qwen3_llm, request(two_media, media, settings, rid))
        (entry,) = report(sharp_qwen3_llm, rid)
        assert (entry.fallback, entry.context_missing) == (None, 0)
        kept.append(entry.selection.kept_indices)
    assert kept[0] != kept[1]


@pytest.mark.parametrize(
    ("settings", "field"),
    [({"retention": 1.5}, "retention"), ({"method": "sharp", "prune_layer": 9}, "prune_layer")],
)
def test_invalid_settings_are_refused_by_field_and_the_engine_keeps_serving(
    sharp_qwen3_llm, text_rows, settings, field
):
    with pytest.raises(ValueError, match=rf"sharp\.{field}:"):
        generate(sharp_qwen3_llm, request(prompt(), {"video": video(60)}, settings))
    (output,) = generate(
        sharp_qwen3_llm, request(prompt(), {"video": video(61)}, {"method": "uniform", "retention": 0.5})
    )
    assert video_pads(output, sharp_qwen3_llm.get_tokenizer()) == kept_count(0.5, NUM_TOKENS) + text_rows


def test_a_later_video_is_scored_after_the_earlier_videos_kept_rows(sharp_qwen3_llm):
    """Two videos in one prompt: the second one's scoring pass has the first one's kept
    tokens and timestamp rows before it, so changing only the first video changes the
    second one's selection, and nothing is missing from its context."""
    settings = {"method": "sharp", "retention": 0.25, "segment_frames": 2}
    two_videos = chat_prompt("<video>", "<video>", QUESTION)
    second = []
    for first_seed in (80, 81):
        rid = new_report_id()
        generate(
            sharp_qwen3_llm, request(two_videos, {"video": [video(first_seed), video(82)]}, settings, rid)
        )
        entries = report(sharp_qwen3_llm, rid)
        assert [(e.fallback, e.context_missing) for e in entries] == [(None, 0), (None, 0)]
        second.append(entries[1].selection.kept_indices)
    assert second[0] != second[1]


def test_static_groups_are_skipped_and_the_prefill_equals_the_reference(sharp_qwen3_llm, reference):
    """skip_static on a slideshow whose groups 1 and 3 repeat the one before: those never
    reach the tower, their timestamp rows stay in the prompt (never pruned), and the
    prompt log-probs equal HF's forward over the kept tokens at their unpruned positions."""
    frames, metadata = media = slides_video(11, 4, {2}, size=SIDE, fps=FPS)
    rid = new_report_id()
    settings = {"method": "sharp", "retention": 0.5, "segment_frames": 2, "skip_static": True}
    output = _with_logprobs(
        sharp_qwen3_llm, engine_helpers.request(prompt(), {"video": media}, settings, rid)
    )
    (inside,) = report(sharp_qwen3_llm, rid)
    assert inside.redundancy.skipped_groups == [1, 3]
    kept = torch.tensor(inside.selection.kept_indices)
    assert set((kept // 16).tolist()) <= {0, 2} and kept.numel() == kept_count(0.5, 2 * 16)
    ids, positions, visual, _ = reference.prepare(prompt(), frames, metadata)
    outside = reference.prompt_logprobs(ids, positions, visual, kept, output.prompt_token_ids)
    torch.testing.assert_close(
        engine_helpers.prompt_logprobs(output), outside, atol=FP32_LOGPROB_TOLERANCE, rtol=0
    )
