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
    """The joined frontend + worker report for one request (offline engine)."""
    record = FRONTEND_RECORDS.get(report_id)
    assert record is not None, f"no frontend record for {report_id}"
    worker = llm.collective_rpc("sharp_reports", args=([item["mm_hash"] for item in record],))[0]
    return join_report(record, worker)
