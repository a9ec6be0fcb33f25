"""POST /v1/chat/completions: OpenAI-compatible, streaming or not, with per-request ShaRP
settings and a `sharp` report on the response (on the final chunk when streaming).
A client that disconnects, or a request past its timeout, aborts its engine request."""

from __future__ import annotations

import asyncio
import time
import uuid
import weakref

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from ..chat import completion, sse
from ..chat.request import request_settings
from ..chat.run import EngineRun
from ..deps import AdmissionDep, Authorized, EngineDep, MetricsDep, PresetsDep, SettingsDep, StoreDep
from ..errors import error_responses
from ..media import resolve
from ..schemas import ChatCompletionRequest

router = APIRouter(prefix="/v1", tags=["chat"], dependencies=[Authorized])


@router.post("/chat/completions", responses=error_responses(400, 401, 403, 404, 413, 415, 429, 500, 503, 504))
async def create_chat_completion(
    body: ChatCompletionRequest,
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    store: StoreDep,
    metrics: MetricsDep,
    presets: PresetsDep,
    admission: AdmissionDep,
):
    received = time.monotonic()
    ticket = admission.admit()  # a 429 when full, before anything else
    try:
        response = await _respond(body, request, engine, settings, store, metrics, presets, received)
    except BaseException:
        ticket.release()
        raise
    if isinstance(response, StreamingResponse):  # held until its stream ends
        response.body_iterator = ticket.released_after(response.body_iterator)
        # A stream never started (its client gone before the headers) runs no `finally`:
        # the ticket goes back when the stream is collected.
        weakref.finalize(response.body_iterator, ticket.release)
    else:
        ticket.release()
    return response


async def _respond(body, request, engine, settings, store, metrics, presets, received):
    chosen = request_settings(body, engine, settings, presets)  # before any media work
    media = await resolve.resolve(body, settings, store, request.app.state.decode_pool, metrics)
    report_id = uuid.uuid4().hex
    engine_request = {
        "prompt": engine.render_prompt(media.messages),
        "mm_processor_kwargs": {"sharp": {**chosen.sharp, "report_id": report_id}},
    }
    if media.multi_modal_data():
        engine_request["multi_modal_data"] = media.multi_modal_data()
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    run = EngineRun(engine, engine_request, chosen.sampling, request_id, report_id, media, received, metrics)
    timeout = settings.request_timeout_s
    if not body.stream:
        return await completion.complete(run, body, request, timeout, chosen.return_selection)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    # Wait for the first output before sending headers, so that a request the engine
    # refuses still gets a real 4xx instead of a 200 with an error event.
    deltas = run.deltas()
    try:
        first = await asyncio.wait_for(anext(deltas), timeout)
    except StopAsyncIteration:
        first = None
    except TimeoutError:
        await deltas.aclose()
        raise completion.timed_out(timeout) from None
    return StreamingResponse(
        sse.events(run, body, include_usage, chosen.return_selection, timeout, first, deltas),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"},
    )
