"""A whole (non-streaming) chat completion. Nothing is sent until the answer is done, so
a client that hangs up is noticed only by asking: the connection is polled while the
engine generates, and a client gone or a deadline passed aborts the engine request."""

from __future__ import annotations

import asyncio
import contextlib
import time

from fastapi import Request

from ..errors import ClientClosedRequest, RequestTimeout
from ..schemas import ChatCompletionRequest
from .report import build_report
from .run import EngineRun

DISCONNECT_POLL_S = 0.25


async def complete(
    run: EngineRun, body: ChatCompletionRequest, request: Request, timeout: float, return_selection: bool
) -> dict:
    texts: dict[int, list[str]] = {}
    finish: dict[int, str | None] = {}

    async def collect() -> None:
        async for index, text, reason, _ in run.deltas():
            texts.setdefault(index, []).append(text)
            if reason is not None:
                finish[index] = reason

    task = asyncio.ensure_future(collect())
    deadline = time.monotonic() + timeout
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if task.done():
                break
            if await request.is_disconnected():
                raise ClientClosedRequest("The client disconnected", code="client_disconnected")
            if time.monotonic() > deadline:
                raise timed_out(timeout)
    finally:
        if not task.done():
            # Wait for the cancellation to land: the generator's cleanup aborts the
            # engine request, and the task's outcome must not be read half-way.
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    task.result()  # re-raise an engine error
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": "".join(texts.get(i, []))},
            "finish_reason": finish.get(i),
            "logprobs": None,
        }
        for i in range(body.n)
    ]
    return {
        "id": run.request_id,
        "object": "chat.completion",
        "created": run.created,
        "model": body.model,
        "choices": choices,
        "usage": run.usage(),
        "sharp": (await build_report(run, return_selection)).model_dump(),
    }


def timed_out(timeout: float) -> RequestTimeout:
    return RequestTimeout(f"The request took longer than {timeout:.0f} s", code="timeout")
