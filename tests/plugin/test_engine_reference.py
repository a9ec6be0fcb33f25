"""Kept indices chosen inside vLLM equal what sharp_plugin.core chooses outside vLLM on
the same checkpoint, loaded independently with HF transformers (both in fp32)."""

import pytest
import torch

from sharp_plugin.core import SharpSettings, select_tokens

from ..media import chat_prompt, noise_video
from . import engine_helpers
from .conftest import FP32_DEFAULTS
from .engine_helpers import (
    BF16_LOGPROB_TOLERANCE,
    FP32_LOGPROB_TOLERANCE,
    generate,
    new_report_id,
    prompt_logprobs,
    report,
    request,
    video_pads,
)
from .hf_reference import HFReference

pytestmark = pytest.mark.engine

SETTINGS = {
    "fastv": {"method": "fastv", "retention": 0.25, "prune_layer": 2},
    "sharp, black prior, segments, dedup": {
        "method": "sharp", "retention": 0.25, "prune_layer": 2, "segment_frames": 2,
        "debias": "black", "calibration": "subtract", "lam": 1.0, "dedup_threshold": 0.9,
    },
    "sharp, black prior scored by the question": {
        "method": "sharp", "retention": 0.25, "prune_layer": 2, "segment_frames": 2,
        "debias": "black", "prior_query": "question", "lam": 2.0,
    },
    "sharp, mean prior, divide, layer 1": {
        "method": "sharp", "retention": 0.1, "prune_layer": 1, "segment_frames": 4,
        "debias": "mean", "calibration": "divide", "dedup_threshold": 0.8,
    },
    "sharp, no fixes but dedup": {
        "method": "sharp", "retention": 0.5, "prune_layer": 3, "segment_frames": 0,
        "debias": "off", "dedup_threshold": 0.5,
    },
    # Each segment keeps its share of the budget: the engine must give every token its
    # temporal group as the reference does.
    "sharp, budget spread over segments": {
        "method": "sharp", "retention": 0.25, "prune_layer": 2, "segment_frames": 2,
        "budget_spread": "segments", "debias": "black",
    },
    # The segment-local mask: the engine's pass computes each row over the prefix and
    # its own segment only, in row blocks; the reference runs HF's forward over the
    # whole sequence with the full [L, L] mask.
    "sharp, segment-local mask, black prior": {
        "method": "sharp", "retention": 0.25, "prune_layer": 2, "segment_frames": 1,
        "segment_mask": "local", "debias": "black",
    },
}  # fmt: skip


def token_grid(grid_thw: list[int]) -> tuple[int, int, int]:
    """The report's token grid for an HF video grid (2 x 2 patches merged per token)."""
    t, h, w = grid_thw
    return t, h // 2, w // 2


GENERIC_SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    return HFReference(tiny_model_dir)


QUESTION = "What colour is the circle?"
CASES = [(name, "after") for name in SETTINGS] + [
    # The question before the video: its rows become the query (docs/method.md, "Query rows").
    ("fastv", "before"),
    ("sharp, black prior scored by the question", "before"),
]


@pytest.mark.parametrize(("name", "question_stands"), CASES)
def test_kept_indices_match_an_outside_reference(sharp_llm_fp32, reference, name, question_stands):
    settings = SETTINGS[name]
    parts = ("<video>", QUESTION) if question_stands == "after" else (QUESTION, "<video>")
    prompt = chat_prompt(*parts)
    frames, metadata = noise_video(40, fps=2.0)
    rid = new_report_id()
    generate(sharp_llm_fp32, request(prompt, {"video": (frames, metadata)}, settings, rid))
    (inside,) = report(sharp_llm_fp32, rid)

    outside, grid = _kept_outside(reference, prompt, frames, metadata, settings)
    assert token_grid(grid) == inside.selection.token_grid
    assert inside.selection.kept_indices == outside
    assert (inside.prior is not None) == (SharpSettings(**settings).effective().debias == "black")


def _kept_outside(reference, prompt, frames, metadata, settings) -> tuple[list[int], list[int]]:
    """The kept indices sharp_plugin.core chooses on the HF-loaded model for this video
    alone, and its grid."""
    prefix, suffix, grid, t_scale, visual, black_visual = reference.prepare(prompt, frames, metadata["fps"])
    parsed = SharpSettings(**settings)
    scorer = reference.scoring_pass(prefix, suffix, grid, t_scale, parsed.prune_layer)
    prior_scorer = scorer
    if parsed.prior_query == "generic":
        # The prior's query: a fixed question in the model's default chat (system turn included).
        generic = GENERIC_SYSTEM + chat_prompt("<video>", "What happens in this video?")
        prior_prefix, prior_suffix, *_ = reference.prepare(generic, frames, metadata["fps"])
        prior_scorer = reference.scoring_pass(prior_prefix, prior_suffix, grid, t_scale, parsed.prune_layer)
    _, height, width = token_grid(grid)
    token_groups = torch.arange(visual.shape[0]) // (height * width)
    outside = select_tokens(
        parsed,
        visual,
        scorer,
        lambda groups: prior_scorer(black_visual, groups).scores,
        token_groups=token_groups,
    )
    return outside.kept.tolist(), grid


def _record_videos_per_embed_call(worker) -> None:
    """Spy (calls through): how many videos each embed_multimodal call holds."""
    model = worker.model_runner.model
    model._test_videos_per_call = []
    if not hasattr(model, "_test_original_embed_for_count"):
        model._test_original_embed_for_count = model.embed_multimodal

        def embed_multimodal(**kwargs):
            grids = kwargs.get("video_grid_thw")
            if grids is not None:
                model._test_videos_per_call.append(len(grids))
            return model._test_original_embed_for_count(**kwargs)

        model.embed_multimodal = embed_multimodal


def _videos_per_embed_call(worker) -> list[int]:
    return worker.model_runner.model._test_videos_per_call


def _record_videos_per_tower_run(worker) -> None:
    """Spy (calls through): how many videos each vision-tower run holds."""
    model = worker.model_runner.model
    original = type(model)._process_video_input
    model._test_tower_videos = []

    def counted(video_input):
        model._test_tower_videos.append(len(video_input["video_grid_thw"]))
        return original(model, video_input)

    model._process_video_input = counted


def _videos_per_tower_run(worker) -> list[int]:
    model = worker.model_runner.model
    del model._process_video_input  # back to the class's method
    return model._test_tower_videos


def test_videos_arriving_together_are_scored_in_one_packed_pass_and_each_matches_the_reference(
    sharp_llm_fp32, reference
):
    """Every case above as one batch of requests: vLLM embeds them in one step, our
    runner patch lets that step embed them in one call, and the videos that score at the
    same layer share one packed scoring pass. One of the videos was asked about before,
    so the vision tower runs over the others only (the video-subset path). Each
    selection must still be the one the outside reference makes for that video alone."""
    cases = []
    for seed, (name, settings) in enumerate(SETTINGS.items()):
        frames, metadata = noise_video(60 + seed, fps=2.0)
        prompt = chat_prompt("<video>", f"{QUESTION} ({name})")
        cases.append((prompt, frames, metadata, settings, new_report_id()))
    known = 2  # in the middle, so the subset is not a prefix or suffix of the batch
    _, frames, metadata, settings, _ = cases[known]
    generate(
        sharp_llm_fp32,
        request(chat_prompt("<video>", "Earlier question?"), {"video": (frames, metadata)}, settings),
    )
    sharp_llm_fp32.collective_rpc(_record_videos_per_embed_call)
    sharp_llm_fp32.collective_rpc(_record_videos_per_tower_run)
    generate(
        sharp_llm_fp32,
        [
            request(prompt, {"video": (frames, metadata)}, settings, rid)
            for prompt, frames, metadata, settings, rid in cases
        ],
    )
    (calls,) = sharp_llm_fp32.collective_rpc(_videos_per_embed_call)
    # The engine may start stepping before the last request is added, so the first
    # requests can get a step of their own; the rest share one.
    assert sum(calls) == len(cases) and max(calls) >= 3, f"videos per embed_multimodal call: {calls}"
    (tower,) = sharp_llm_fp32.collective_rpc(_videos_per_tower_run)
    assert sum(tower) == len(cases) - 1, f"videos per vision-tower run: {tower}"
    packed = 0
    for index, (prompt, frames, metadata, settings, rid) in enumerate(cases):
        (inside,) = report(sharp_llm_fp32, rid)
        assert inside.vision_cached is (index == known)
        packed += inside.scored_with > 1
        outside, _ = _kept_outside(reference, prompt, frames, metadata, settings)
        assert inside.selection.kept_indices == outside, settings
    assert packed >= 2, "no two videos shared a packed scoring pass"


# Measured on the tiny model (max |difference| over the prompt): fp32 engine 1e-6, bf16
# engine 6e-3. Placing the kept tokens at the positions of the first k tokens instead of
# their own moves the log-probs by 3e-3: the fp32 bound (1e-4) catches that 30 times
# over; the bf16 bound (3x its measured noise) only catches gross errors.


@pytest.mark.parametrize(
    ("engine", "tolerance"),
    [("sharp_llm_fp32", FP32_LOGPROB_TOLERANCE), ("sharp_llm", BF16_LOGPROB_TOLERANCE)],
)
def test_pruned_prefill_equals_a_reference_forward_over_the_kept_tokens(
    request, reference, engine, tolerance
):
    """vLLM's pruned prefill (prompt log-probs) against HF's forward over the same kept
    tokens at their original positions: a position, order or numerics error in the
    kept-token path shows here, not only as drift on the quality bench."""
    from vllm import SamplingParams

    llm = request.getfixturevalue(engine)  # pytest's request: the engine fixture by name
    prompt = chat_prompt("<video>", QUESTION)
    frames, metadata = noise_video(42, fps=2.0)
    rid = new_report_id()
    params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
    settings = {"method": "sharp", "retention": 0.25}
    req = engine_helpers.request(prompt, {"video": (frames, metadata)}, settings, rid)
    (output,) = llm.generate([req], params, use_tqdm=False)
    (inside,) = report(llm, rid)
    ids = list(output.prompt_token_ids)
    vllm_logprobs = prompt_logprobs(output)

    prefix, _, grid, t_scale, visual, _ = reference.prepare(prompt, frames, metadata["fps"])
    kept = torch.tensor(inside.selection.kept_indices)
    assert token_grid(grid) == inside.selection.token_grid
    assert video_pads(output, llm.get_tokenizer()) == kept.numel() == 128
    expected = reference.prompt_logprobs(ids, len(prefix), visual, kept, grid, t_scale)
    torch.testing.assert_close(vllm_logprobs, expected, atol=tolerance, rtol=0)


def test_engine_defaults_apply_and_request_values_win(sharp_llm_fp32):
    tokenizer = sharp_llm_fp32.get_tokenizer()
    prompt, video = chat_prompt("<video>", "What is shown?"), noise_video(41)
    assert FP32_DEFAULTS == {"method": "uniform", "retention": 0.5}
    no_settings, override_method, override_retention = generate(
        sharp_llm_fp32,
        [
            request(prompt, {"video": video}),
            request(prompt, {"video": video}, {"method": "none"}),
            request(prompt, {"video": video}, {"retention": 0.25}),
        ],
    )
    assert video_pads(no_settings, tokenizer) == 256
    assert video_pads(override_method, tokenizer) == 512
    assert video_pads(override_retention, tokenizer) == 128
