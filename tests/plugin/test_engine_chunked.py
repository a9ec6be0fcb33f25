"""Chunked prefill: the prompt (and the video's embeddings with their position channels)
reaches the model a slice at a time. Results must match the unchunked engines."""

import pytest

from ..media import chat_prompt, noise_video
from .conftest import CHUNK_TOKENS
from .engine_helpers import generate, new_report_id, report, request

pytestmark = pytest.mark.engine


def test_unpruned_chunked_equals_stock(stock_llm, sharp_llm_chunked):
    prompt = chat_prompt("<video>", "What is shown?")
    # 8 frames (256 tokens: the encoder cache at this budget holds no more); at 0.04 fps a
    # temporal group is 50 s, so temporal positions reach 300, past bf16's exact range.
    media = {"video": noise_video(60, frames=8, fps=0.04)}
    (stock,) = generate(stock_llm, request(prompt, media), max_tokens=8)
    (chunked,) = generate(sharp_llm_chunked, request(prompt, media, {"method": "none"}), max_tokens=8)
    assert len(chunked.prompt_token_ids) > 2 * CHUNK_TOKENS, "the prompt must span several chunks"
    assert chunked.outputs[0].token_ids == stock.outputs[0].token_ids


@pytest.mark.parametrize(
    "settings", [{"method": "sharp", "retention": 0.5}, {"method": "uniform", "retention": 0.75}]
)
def test_pruned_chunked_equals_unchunked(sharp_llm, sharp_llm_chunked, settings):
    prompt = chat_prompt("<video>", "What colour is it?")
    media = {"video": noise_video(61, frames=8)}
    rid_whole, rid_chunked = new_report_id(), new_report_id()
    (whole,) = generate(sharp_llm, request(prompt, media, settings, rid_whole), max_tokens=8)
    (chunked,) = generate(sharp_llm_chunked, request(prompt, media, settings, rid_chunked), max_tokens=8)
    assert len(chunked.prompt_token_ids) > CHUNK_TOKENS, "the prompt must span several chunks"
    assert (
        report(sharp_llm, rid_whole)[0].selection.kept_indices
        == report(sharp_llm_chunked, rid_chunked)[0].selection.kept_indices
    )
    assert chunked.prompt_token_ids == whole.prompt_token_ids
    assert chunked.outputs[0].token_ids == whole.outputs[0].token_ids


def test_a_chunk_that_starts_right_after_a_vision_start_token(sharp_llm, sharp_llm_chunked):
    """The scheduler cuts a chunk just before a video's placeholders (e.g. when the step
    has no encoder budget left for it). vLLM's own EVS position update raised
    IndexError there and took the engine down (bench/load.py found it at concurrency 4)."""
    tokenizer = sharp_llm_chunked.get_tokenizer()
    vision_start = tokenizer.convert_tokens_to_ids("<|vision_start|>")
    padding = next(
        n
        for n in range(200)
        if tokenizer.encode(chat_prompt("a " * n, "<video>", "What is shown?")).index(vision_start)
        == CHUNK_TOKENS - 1
    )
    prompt = chat_prompt("a " * padding, "<video>", "What is shown?")
    media, settings = {"video": noise_video(62, frames=8)}, {"method": "sharp", "retention": 0.5}
    (whole,) = generate(sharp_llm, request(prompt, media, settings), max_tokens=8)
    (chunked,) = generate(sharp_llm_chunked, request(prompt, media, settings), max_tokens=8)
    assert chunked.prompt_token_ids.index(vision_start) == CHUNK_TOKENS - 1
    assert chunked.outputs[0].token_ids == whole.outputs[0].token_ids
