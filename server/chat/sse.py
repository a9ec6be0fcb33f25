"""A streamed chat completion as server-sent events, in OpenAI's chunk shape, with the
report on the final chunk. Headers are sent once the engine produced its first output,
so an error after that becomes an error event in OpenAI's envelope, then `[DONE]`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from ..errors import APIError, error_body
from ..schemas import ChatCompletionRequest
from .completion import timed_out
from .report import build_report
from .run import EngineRun


async def events(
    run: EngineRun,
    body: ChatCompletionRequest,
    include_usage: bool,
    return_selection: bool,
    timeout: float,
    first,
    deltas: AsyncIterator,
) -> AsyncIterator[str]:
    """`first`: the first delta, already awaited; `deltas`: the rest."""

    def chunk(choices: list[dict], **extra) -> str:
        payload = {
            "id": run.request_id,
            "object": "chat.completion.chunk",
            "created": run.created,
            "model": body.model,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(payload)}\n\n"

    try:
        async with asyncio.timeout(timeout):
            for i in range(body.n):
                yield chunk(
                    [{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
                )
            async for index, text, reason, new_tokens in _chain(first, deltas):
                # One chunk per step that made tokens, even when the detokenizer holds
                # their text back (a partial UTF-8 sequence): as stock vLLM streams, so
                # clients and load tools see every token's arrival.
                if text or new_tokens or reason is not None:
                    delta = {"content": text} if text or new_tokens else {}
                    yield chunk([{"index": index, "delta": delta, "finish_reason": reason}])
            report = (await build_report(run, return_selection)).model_dump()
            if include_usage:
                yield chunk([], usage=run.usage(), sharp=report)
            else:
                yield chunk([], sharp=report)
    except TimeoutError:
        yield _error_event(timed_out(timeout))
    except Exception as exc:  # an engine failure mid-stream
        yield _error_event(APIError(f"Generation failed: {type(exc).__name__}"))
    finally:
        await deltas.aclose()  # on a disconnect this aborts the engine request
    yield "data: [DONE]\n\n"


def _error_event(error: APIError) -> str:
    return f"data: {json.dumps(error_body(error.message, error.error_type, error.param, error.code))}\n\n"


async def _chain(first, rest: AsyncIterator) -> AsyncIterator:
    if first is not None:
        yield first
    async for item in rest:
        yield item
