"""Videos longer than the context window: only the kept tokens enter the
prompt, so a video whose unpruned tokens are many times max_model_len is served when its
pruned prompt fits, and a prompt that does not fit is refused naming a retention that
would. The tiny model with a 1,024-token context and an 8,192-token video."""

import re

import pytest

from sharp_plugin.core import kept_count

from ..engines import engine_fixture
from ..media import chat_prompt, noise_video
from .engine_helpers import generate, new_report_id, report, request

pytestmark = pytest.mark.engine

CONTEXT = 1024
VIDEO_TOKENS = 8192  # 256 frames of 224^2 (the tiny build's pixel budget): 128 groups of 8 x 8 tokens


# The vision tower in chunks of 16 temporal groups (8 chunks for this video), in fp32 so
# that the chunked output can be held to the whole one exactly.
CHUNK_PATCHES = 16 * 16 * 16


short_context_llm = engine_fixture(
    "tiny_model_dir",
    scope="module",
    dtype="float32",
    max_model_len=CONTEXT,
    sharp_config={"sharp_tower_chunk_patches": CHUNK_PATCHES, "sharp_max_video_tokens": VIDEO_TOKENS},
)


@pytest.fixture(scope="module")
def long_video():
    return {"video": noise_video(70, frames=256, size=224)}


PROMPT = chat_prompt("<video>", "What colour is it?")


@pytest.mark.parametrize("method", ["sharp", "uniform"])
def test_a_video_eight_times_the_context_is_served_when_its_kept_tokens_fit(
    short_context_llm, long_video, method
):
    settings = {"method": method, "retention": 0.1, "segment_mask": "local"}
    report_id = new_report_id()
    (output,) = generate(short_context_llm, request(PROMPT, long_video, settings, report_id))
    (entry,) = report(short_context_llm, report_id)
    assert entry.video_tokens == VIDEO_TOKENS >= 8 * CONTEXT
    assert entry.video_tokens_kept == kept_count(0.1, VIDEO_TOKENS) == len(entry.selection.kept_indices)
    assert len(output.prompt_token_ids) <= CONTEXT and output.outputs[0].token_ids


def test_a_prompt_over_the_context_is_refused_naming_a_retention_that_fits(short_context_llm, long_video):
    with pytest.raises(ValueError, match=r"sharp\.retention: .* over max_model_len 1024") as refused:
        generate(short_context_llm, request(PROMPT, long_video, {"method": "uniform", "retention": 0.5}))
    named = float(re.search(r"retention ([0-9.]+) or lower fits", str(refused.value)).group(1))
    assert 0.1 < named < 0.125  # about (1024 - the text) / 8192
    # The named retention is served, and the next step up (one more token) is not.
    (output,) = generate(
        short_context_llm, request(PROMPT, long_video, {"method": "uniform", "retention": named})
    )
    assert len(output.prompt_token_ids) <= CONTEXT - 1
    with pytest.raises(ValueError, match=r"sharp\.retention: "):
        generate(
            short_context_llm, request(PROMPT, long_video, {"method": "uniform", "retention": named + 2e-4})
        )
    # The engine keeps serving after the refusals.
    (again,) = generate(
        short_context_llm, request(PROMPT, long_video, {"method": "uniform", "retention": 0.1})
    )
    assert again.outputs[0].token_ids


def test_the_vision_tower_in_chunks_of_frame_groups_changes_nothing(short_context_llm):
    """The same engine with the tower in chunks and whole (its 32,768 patches in one
    call): the same selection and the same answer. A short video before the long one
    runs whole either way. One engine, so that no session-wide engine is left holding a long video's
    memory."""
    # Videos this engine has not seen, and no vision cache: each run embeds them afresh.
    short_then_long = {"video": [noise_video(72, frames=8, size=224), noise_video(71, frames=256, size=224)]}
    prompt = chat_prompt("<video>", "<video>", "What colour is it?")
    short_context_llm.collective_rpc(_record_tower_groups)
    outputs, kept, runs = [], [], []
    try:
        # `seed` changes nothing for sharp, but it is part of the item's identity, so
        # the second run is not an encoder-cache hit of the first.
        for seed, chunk in ((1, CHUNK_PATCHES), (2, 0)):
            short_context_llm.collective_rpc(_set_tower_chunks, args=(chunk,))
            settings = {"method": "sharp", "retention": 0.1, "segment_mask": "local", "seed": seed}
            report_id = new_report_id()
            (output,) = generate(
                short_context_llm, request(prompt, short_then_long, settings, report_id), max_tokens=8
            )
            outputs.append(output)
            kept.append([entry.selection.kept_indices for entry in report(short_context_llm, report_id)])
            (groups,) = short_context_llm.collective_rpc(_tower_groups)
            runs.append(groups)
    finally:
        short_context_llm.collective_rpc(_set_tower_chunks, args=(CHUNK_PATCHES,))
    # Temporal groups per video of each tower call (vLLM's pruning path embeds one video
    # per call): chunked, the short video's 4 groups whole, then the long one's 128 in
    # 8 calls; whole, each video in one call.
    assert runs == [[[4]] + [[16]] * 8, [[4], [128]]], f"groups per vision-tower call: {runs}"
    assert kept[0] == kept[1]
    assert outputs[0].prompt_token_ids == outputs[1].prompt_token_ids
    assert outputs[0].outputs[0].token_ids == outputs[1].outputs[0].token_ids


def test_the_memory_profile_holds_the_longest_video_and_longer_ones_are_refused(short_context_llm):
    """`sharp_max_video_tokens`: vLLM's memory profile embeds dummy videos sized by the
    1,024-token context; the model then also runs a scoring pass over an 8,192-token
    video, and the processor refuses a video longer than that, naming the limit. (vLLM's
    CPU runner skips the encoder profile, so this does what its profile_run does.)"""
    ((passes, dummy_tokens, reserved),) = short_context_llm.collective_rpc(_embed_profiling_dummy)
    assert dummy_tokens < CONTEXT and reserved == VIDEO_TOKENS
    longest, local = passes[-1]
    assert VIDEO_TOKENS <= longest < VIDEO_TOKENS + dummy_tokens, passes  # whole groups of the dummy's
    assert not local  # `auto`: block-causal below 16,384 tokens, as a real request of that length
    assert all(tokens <= dummy_tokens for tokens, _ in passes[:-1]), passes
    longer = {"video": noise_video(73, frames=264, size=224)}  # 132 groups: 8,448 tokens
    with pytest.raises(ValueError, match=r"8448 unpruned visual tokens, more than the 8192 "):
        generate(short_context_llm, request(PROMPT, longer, {"method": "uniform", "retention": 0.05}))


def _embed_profiling_dummy(worker):
    """What vLLM's profile_run does with the encoder, recording each scoring pass's
    (video tokens, segment-local)."""
    from sharp_plugin.vllm.scoring_pass import DecoderScoringPass

    runner = worker.model_runner
    passes = []
    original = DecoderScoringPass.__call__

    def spy(self, visual, mask):
        passes.append((int(visual.shape[0]), mask.local))
        return original(self, visual, mask)

    DecoderScoringPass.__call__ = spy
    try:
        runner.model.embed_multimodal(**runner._get_mm_dummy_batch("video", 1))
    finally:
        DecoderScoringPass.__call__ = original
    dummy_tokens = runner.mm_budget.mm_max_toks_per_item["video"]
    return passes, dummy_tokens, runner.model.sharp_profile.reserved_video_tokens


def _set_tower_chunks(worker, patches: int) -> None:
    tower = worker.model_runner.model.sharp_tower
    tower.chunk_patches = patches
    tower.cache = None  # every run embeds the video


def _record_tower_groups(worker) -> None:
    """Spy (calls through): the temporal groups of each vision-tower run of a video."""
    model = worker.model_runner.model
    original = type(model)._process_video_input
    model._test_tower_groups = []

    def counted(video_input):
        model._test_tower_groups.append([int(t) for t in video_input["video_grid_thw"][:, 0]])
        return original(model, video_input)

    model._process_video_input = counted


def _tower_groups(worker) -> list[int]:
    """Each call's groups per video, recorded since the last read (then forgotten)."""
    model = worker.model_runner.model
    groups, model._test_tower_groups = model._test_tower_groups, []
    return groups
