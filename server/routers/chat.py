"""POST /v1/chat/completions: OpenAI-compatible, streaming or not, with per-request
ShaRP settings and a `sharp` report on the response (on the final chunk when streaming).

A client that disconnects, or a request past its timeout, aborts its engine request."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from sharp_plugin.core import parse_settings
from sharp_plugin.core.settings import SharpSettingsError

from ..deps import Authorized, EngineDep, MetricsDep, PresetsDep, SettingsDep, StoreDep
from ..errors import (
    APIError,
    ClientClosedRequest,
    InvalidRequest,
    NotFound,
    RequestTimeout,
    error_body,
    error_responses,
)
from ..media import resolve
from ..presets import apply_preset, resolve_model
from ..schemas import RETURN_SELECTION, ChatCompletionRequest, SharpReport, SharpSelection, SharpVideoReport

router = APIRouter(prefix="/v1", tags=["chat"], dependencies=[Authorized])

_DISCONNECT_POLL_S = 0.25


def sharp_request_settings(body: ChatCompletionRequest) -> tuple[dict[str, Any], bool]:
    """The request's `sharp` object, from the body field or vLLM's mm_processor_kwargs,
    and whether it asked for the selections in its report (`return_selection`, a server
    option that never reaches the plugin)."""
    nested = (body.mm_processor_kwargs or {}).get("sharp")
    if body.sharp is not None and nested is not None:
        raise InvalidRequest("Give `sharp` or `mm_processor_kwargs.sharp`, not both", param="sharp")
    raw = body.sharp if body.sharp is not None else nested
    if raw is None:
        return {}, False
    if not isinstance(raw, dict):
        raise SharpSettingsError("sharp: must be an object")
    return_selection = raw.get(RETURN_SELECTION, False)
    if not isinstance(return_selection, bool):
        raise SharpSettingsError(f"sharp.{RETURN_SELECTION}: must be a boolean", field=RETURN_SELECTION)
    own = {"report_id", RETURN_SELECTION}  # report_id is ours to set
    return {k: v for k, v in raw.items() if k not in own}, return_selection


def sampling_params(body: ChatCompletionRequest) -> dict[str, Any]:
    params: dict[str, Any] = {"n": body.n, "temperature": body.temperature, "top_p": body.top_p}
    if body.output_budget is not None:
        params["max_tokens"] = body.output_budget
    if body.seed is not None:
        params["seed"] = body.seed
    if body.stop is not None:
        params["stop"] = [body.stop] if isinstance(body.stop, str) else body.stop
    if body.ignore_eos:
        params["ignore_eos"] = True
    return params


@router.post("/chat/completions", responses=error_responses(400, 401, 403, 404, 413, 415, 500, 503, 504))
async def create_chat_completion(
    body: ChatCompletionRequest,
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    store: StoreDep,
    metrics: MetricsDep,
    presets: PresetsDep,
):
    received = time.monotonic()
    preset = resolve_model(body.model, engine.model_name, presets)
    if preset is None:
        raise NotFound(f"The model {body.model!r} does not exist", param="model", code="model_not_found")
    own, return_selection = sharp_request_settings(body)
    sharp = apply_preset(preset, own)
    # Validate before any media work; the plugin validates again inside vLLM.
    parsed = parse_settings(
        sharp,
        settings.sharp,
        num_decoder_layers=engine.num_decoder_layers,
        first_stage_layers=engine.first_stage_layers,
    )
    if parsed.prunes and parsed.retention < settings.min_retention:
        raise SharpSettingsError(
            f"sharp.retention: must be at least {settings.min_retention} on this server (min_retention), "
            f"got {parsed.retention}",
            field="retention",
        )
    sampling = sampling_params(body)
    engine.check_sampling(sampling)

    media = await resolve.resolve(body, settings, store, request.app.state.decode_pool, metrics)
    report_id = uuid.uuid4().hex
    engine_request = {
        "prompt": engine.render_prompt(media.messages),
        "multi_modal_data": media.multi_modal_data(),
        "mm_processor_kwargs": {"sharp": {**sharp, "report_id": report_id}},
    }
    if not engine_request["multi_modal_data"]:
        del engine_request["multi_modal_data"]
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    run = _Run(
        engine, engine_request, sampling, request_id, report_id, media, received, metrics, return_selection
    )
    timeout = settings.request_timeout_s
    if body.stream:
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
            raise _timed_out(timeout) from None
        return StreamingResponse(
            _sse(run, body, include_usage, timeout, first, deltas),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
    return await _complete(run, body, request, timeout)


class _Run:
    """One engine request: its outputs per choice, usage and report."""

    def __init__(
        self,
        engine,
        engine_request,
        sampling,
        request_id,
        report_id,
        media,
        received,
        metrics,
        return_selection: bool,
    ):
        self.engine, self.engine_request, self.sampling = engine, engine_request, sampling
        self.request_id, self.report_id, self.media = request_id, report_id, media
        self.received, self.metrics = received, metrics
        self.created = int(time.time())
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.finished = False
        self.return_selection = return_selection  # the report lists the kept indices
        self._first_token_seen = False

    async def deltas(self) -> AsyncIterator[tuple[int, str, str | None, int]]:
        """(choice index, text delta, finish reason, new tokens) as the engine produces them."""
        try:
            async for output in self.engine.generate(self.engine_request, self.sampling, self.request_id):
                if output.prompt_token_ids is not None:
                    self.prompt_tokens = len(output.prompt_token_ids)
                for choice in output.outputs:
                    self.completion_tokens += len(choice.token_ids)
                    self.metrics.completion_tokens.inc(len(choice.token_ids))
                    if choice.token_ids and not self._first_token_seen:
                        self._first_token_seen = True
                        self.metrics.ttft_seconds.observe(time.monotonic() - self.received)
                    yield choice.index, choice.text, choice.finish_reason, len(choice.token_ids)
            self.finished = True
        finally:
            if not self.finished:  # cancelled or failed: make sure the engine stops too
                self.metrics.engine_aborts.inc()
                await asyncio.shield(self.engine.abort(self.request_id))

    async def report(self) -> SharpReport:
        entries = await self.engine.sharp_report(self.report_id)
        videos = [
            SharpVideoReport(
                method=e["method"], retention=e["retention"], prune_layer=e["prune_layer"],
                video_tokens=e["video_tokens"], video_tokens_kept=e["video_tokens_kept"],
                scoring_ms=0.0 if e.get("cached") else e["scoring_ms"], frames=len(decoded.indices),
                cached=bool(e.get("cached")), fallback=e.get("fallback"),
                prior=None if e.get("cached") else e.get("prior"),
                vision_cached=None if e.get("cached") else e.get("vision_cached"),
                context_missing=None if e.get("cached") else e.get("context_missing"),
                scored_with=None if e.get("cached") else e.get("scored_with"),
                selection=_selection(e, decoded) if self.return_selection else None,
            )
            for e, decoded in zip(entries, self.media.videos, strict=False)
        ]  # fmt: skip
        first = videos[0] if videos else None
        report = SharpReport(
            method=first.method if first else "none",
            retention=first.retention if first else 1.0,
            prune_layer=first.prune_layer if first else None,
            video_tokens=sum(v.video_tokens or 0 for v in videos),
            video_tokens_kept=sum(v.video_tokens_kept or 0 for v in videos),
            scoring_ms=sum(v.scoring_ms or 0.0 for v in videos),
            frames=sum(v.frames for v in videos),
            videos=videos,
        )
        self.metrics.observe_report(report)
        return report

    def usage(self) -> dict[str, int]:
        total = self.prompt_tokens + self.completion_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": total,
        }


def _selection(entry: dict[str, Any], decoded) -> SharpSelection | None:
    """What was kept, where in the video: None when the worker no longer holds the
    decision (evicted), so there is nothing true to show."""
    grid, kept = entry.get("token_grid"), entry.get("kept_indices")
    if grid is None or kept is None:
        return None
    fps = decoded.info.fps
    return SharpSelection(
        token_grid=grid,
        frames_per_group=max(1, -(-len(decoded.indices) // grid[0])),
        kept_indices=kept,
        frame_timestamps=[round(index / fps, 6) for index in decoded.indices],
    )


async def _complete(run: _Run, body: ChatCompletionRequest, request: Request, timeout: float) -> dict:
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
            await asyncio.wait({task}, timeout=_DISCONNECT_POLL_S)
            if task.done():
                break
            if await request.is_disconnected():
                raise ClientClosedRequest("The client disconnected", code="client_disconnected")
            if time.monotonic() > deadline:
                raise _timed_out(timeout)
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
        "sharp": (await run.report()).model_dump(),
    }


async def _sse(run, body, include_usage: bool, timeout: float, first, deltas) -> AsyncIterator[str]:
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
            report = (await run.report()).model_dump()
            if include_usage:
                yield chunk([], usage=run.usage(), sharp=report)
            else:
                yield chunk([], sharp=report)
    # Headers are sent: an error mid-stream becomes an error event in OpenAI's envelope.
    except TimeoutError:
        yield _error_event(_timed_out(timeout))
    except Exception as exc:  # an engine failure mid-stream
        yield _error_event(APIError(f"Generation failed: {type(exc).__name__}"))
    finally:
        await deltas.aclose()  # on a disconnect this aborts the engine request
    yield "data: [DONE]\n\n"


def _timed_out(timeout: float) -> RequestTimeout:
    return RequestTimeout(f"The request took longer than {timeout:.0f} s", code="timeout")


def _error_event(error: APIError) -> str:
    return f"data: {json.dumps(error_body(error.message, error.error_type, error.param, error.code))}\n\n"


async def _chain(first, rest: AsyncIterator) -> AsyncIterator:
    if first is not None:
        yield first
    async for item in rest:
        yield item
