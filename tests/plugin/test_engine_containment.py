"""Nothing that goes wrong inside the worker's selection may take the engine down: a
failure falls back to a safe selection of the same k tokens, the request completes and
its report says why. And vLLM's memory profile runs a full selection over its dummy
video, so the profiler reserves the selection's scratch memory."""

import pytest

from sharp_plugin.core import kept_count

from ..media import chat_prompt, noise_video
from .engine_helpers import generate, new_report_id, report, request, video_pads

pytestmark = pytest.mark.engine

N = 512
QUESTION = chat_prompt("<video>", "What is shown?")


def _break_selection(worker) -> None:
    import sharp_plugin.vllm.video_selection as model

    def broken(*args, **kwargs):
        raise RuntimeError("injected failure")

    model._saved_select_tokens = model.select_tokens
    model.select_tokens = broken


def _restore_selection(worker) -> None:
    import sharp_plugin.vllm.video_selection as model

    model.select_tokens = model._saved_select_tokens


def test_a_failing_selection_falls_back_and_the_engine_keeps_serving(sharp_llm):
    tokenizer = sharp_llm.get_tokenizer()
    k = kept_count(0.25, N)
    broken_id = new_report_id()
    sharp_llm.collective_rpc(_break_selection)
    try:
        (output,) = generate(
            sharp_llm, request(QUESTION, {"video": noise_video(40)}, {"retention": 0.25}, broken_id)
        )
    finally:
        sharp_llm.collective_rpc(_restore_selection)
    assert video_pads(output, tokenizer) == k and len(output.outputs[0].token_ids) > 0
    (broken,) = report(sharp_llm, broken_id)
    assert "RuntimeError: injected failure" in broken.fallback
    uniform = list(range(2, N, 4))  # k = 128 of 512: each slice of 4 tokens kept at its centre
    assert k == 128 and broken.selection.kept_indices == uniform

    healthy_id = new_report_id()
    generate(sharp_llm, request(QUESTION, {"video": noise_video(41)}, {"retention": 0.25}, healthy_id))
    (healthy,) = report(sharp_llm, healthy_id)
    assert healthy.fallback is None and healthy.video_tokens_kept == k
    assert healthy.selection.kept_indices != uniform


def _embed_profiling_dummy(worker):
    """What vLLM's profile_run does with the encoder, with a spy on the selections."""
    import sharp_plugin.vllm.video_selection as model

    runner = worker.model_runner
    calls = []
    original = model.select_tokens

    def spy(settings, visual, *args, **kwargs):
        selection = original(settings, visual, *args, **kwargs)
        calls.append((settings.method, visual.shape[0], selection.kept.numel()))
        return selection

    model.select_tokens = spy
    try:
        outputs = runner.model.embed_multimodal(**runner._get_mm_dummy_batch("video", 1))
    finally:
        model.select_tokens = original
    return calls, [int(out.shape[0]) for out in outputs], runner.mm_budget.mm_max_toks_per_item["video"]


def test_the_memory_profile_runs_a_full_selection_over_the_largest_video(sharp_llm):
    ((calls, kept, largest_allowed),) = sharp_llm.collective_rpc(_embed_profiling_dummy)
    assert kept == [largest_allowed], "the dummy video is the largest the engine allows, kept whole"
    # The discarded ShaRP selection (scoring pass, black prior, dedup) over the dummy
    # video, then the dummy's own selection, which keeps everything.
    expected = [
        ("sharp", largest_allowed, kept_count(0.5, largest_allowed)),
        ("none", largest_allowed, largest_allowed),
    ]
    assert [tuple(call) for call in calls] == expected
