from __future__ import annotations

import uuid

from sharp_plugin.vllm.reports import FRONTEND_RECORDS, join_report

from ..media import VIDEO_PAD


def request(prompt, media, sharp=None, report_id=None):
    req = {"prompt": prompt, "multi_modal_data": media}
    if sharp is not None or report_id is not None:
        req["mm_processor_kwargs"] = {
            "sharp": {**(sharp or {}), **({"report_id": report_id} if report_id else {})}
        }
    return req


def generate(llm, requests, max_tokens=4):
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, seed=0)
    return llm.generate(requests, params, use_tqdm=False)


def video_pads(output, tokenizer) -> int:
    return output.prompt_token_ids.count(tokenizer.convert_tokens_to_ids(VIDEO_PAD))


# Bounds on a pruned prefill's prompt log-probs against an outside reference forward
# over the same kept tokens (every family; each test file states what it measured).
FP32_LOGPROB_TOLERANCE = 1e-4
BF16_LOGPROB_TOLERANCE = 2e-2


def prompt_logprobs(output):
    """Log-prob of each prompt token after the first, as vLLM reports it (the request
    asked for `prompt_logprobs=0`). # [L - 1] float32"""
    import torch

    ids = output.prompt_token_ids
    return torch.tensor(
        [entry[t].logprob for entry, t in zip(output.prompt_logprobs[1:], ids[1:], strict=True)]
    )


def new_report_id() -> str:
    return uuid.uuid4().hex


def report(llm, report_id):
    """Each video's VideoReport for one request, joined as the server joins them."""
    worker = llm.collective_rpc("sharp_reports", args=(cache_hashes(report_id),))[0]
    return join_report(FRONTEND_RECORDS.get(report_id), worker)


def cache_hashes(report_id) -> list[str]:
    """The cache hash of each video of one request, as its frontend record holds them."""
    record = FRONTEND_RECORDS.get(report_id)
    assert record is not None, f"no frontend record for {report_id}"
    return [item["mm_hash"] for item in record]


# Checks every family's tests run the same way (tests/plugin/test_<family>.py): each
# takes the family's engine and a function that builds its request.


def check_counts_shrink_exactly(llm, make_request, method, num_tokens, placeholders_of, extra_rows):
    """At each retention the prompt holds exactly the kept tokens plus the family's
    never-pruned rows (`extra_rows`), and the report says so. `make_request(settings,
    report_id)`; `placeholders_of(output)`: the video's placeholder count."""
    from sharp_plugin.core import kept_count

    for retention in (0.5, 0.25, 0.1):
        rid = new_report_id()
        (output,) = generate(llm, make_request({"method": method, "retention": retention}, rid))
        kept = kept_count(retention, num_tokens)
        assert placeholders_of(output) == kept + extra_rows, "kept tokens and the never-pruned rows"
        (entry,) = report(llm, rid)
        assert (entry.video_tokens, entry.video_tokens_kept, entry.fallback) == (
            num_tokens,
            kept,
            None,
        )


def check_new_question_new_selection(llm, make_request, questions):
    """The same request twice is one selection (an encoder-cache hit); a new question on
    the same video is a new selection, whose tower output comes from the vision cache.
    `make_request(question, report_id)`; `questions`: (a question, another)."""
    entries = []
    for question in (questions[0], questions[0], questions[1]):
        rid = new_report_id()
        generate(llm, make_request(question, rid))
        (entry,) = report(llm, rid)
        entries.append(entry)
    first, same, other = entries
    assert same.selection_id == first.selection_id, "the same request reuses the cached selection"
    assert other.selection_id != first.selection_id
    assert other.vision_cached is True, "a new question on a known video skips the tower"
    assert other.selection.kept_indices != first.selection.kept_indices
