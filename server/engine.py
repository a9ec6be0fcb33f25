"""vLLM's AsyncLLM, in-process, with the plugin. The server talks to vLLM only through
this class and vLLM's public engine API (generate, abort, collective_rpc, check_health)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol

from sharp_plugin import recipe
from sharp_plugin.core import SharpSettingsError
from sharp_plugin.report import VideoReport
from sharp_plugin.vllm.bounded_store import BoundedStore
from sharp_plugin.vllm.reports import FRONTEND_RECORDS, join_report, merge_replies

from .errors import APIError, EngineUnavailable, InvalidRequest
from .settings import ServerSettings

logger = logging.getLogger(__name__)


class Engine(Protocol):
    """What the routes need; `VLLMEngine` is the real one, tests may pass a fake."""

    model_name: str
    num_decoder_layers: int
    first_stage_layers: int  # decoder layers on the first pipeline stage
    max_num_seqs: int  # requests the engine runs at once

    def check_sampling(self, sampling: dict[str, Any]) -> None: ...

    def render_prompt(self, messages: list[dict[str, Any]]) -> str: ...

    def generate(
        self, request: dict[str, Any], sampling: dict[str, Any], request_id: str
    ) -> AsyncIterator[Any]: ...

    async def abort(self, request_id: str) -> None: ...

    async def sharp_report(self, report_id: str) -> list[tuple[VideoReport, bool]]: ...

    async def check_health(self) -> None: ...

    def is_dead(self) -> bool: ...

    def num_unfinished_requests(self) -> int: ...

    def shutdown(self) -> None: ...


def check_sampling(sampling: dict[str, Any]) -> None:
    """Build vLLM's SamplingParams once before any media work, so that parameters vLLM
    refuses (an empty stop string, say) are a 400 before anything is decoded."""
    from vllm import SamplingParams

    try:
        SamplingParams(**sampling)
    except Exception as exc:
        raise engine_error(exc) from exc


def engine_error(exc: BaseException) -> Exception:
    """The API error for an exception raised by vLLM for one request.

    vLLM 0.32 splits its errors into VLLMClientError (the request's fault: 4xx) and
    VLLMServerError (5xx). A failure inside input processing (our processor's checks
    among them) reaches us as EngineGenerateError *from* the original, so the cause
    decides. Anything else stays a server error, logged and counted as one.
    """
    from vllm.exceptions import GracefulHTTPError, VLLMClientError
    from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError

    if isinstance(exc, EngineGenerateError) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, (SharpSettingsError, APIError)):
        return exc
    if isinstance(exc, EngineDeadError):
        return EngineUnavailable("The engine has stopped", code="engine_dead")
    if isinstance(exc, GracefulHTTPError):
        error = APIError(exc.message, code="engine_busy")
        error.status_code = int(exc.http_status)
        error.error_type = "service_unavailable" if error.status_code == 503 else "invalid_request_error"
        return error
    if isinstance(exc, (VLLMClientError, ValueError, OverflowError)):
        # ValueError: vLLM's own input checks that predate the split (and the HF
        # processors'); OverflowError: a number too large for a C type.
        return InvalidRequest(str(exc)[:1000], param=getattr(exc, "parameter", None), code="invalid_request")
    logger.error("engine request failed: %s: %s", type(exc).__name__, exc)
    return APIError(f"Generation failed: {type(exc).__name__}", code="engine_error")


def server_engine_args(settings: ServerSettings) -> dict[str, Any]:
    """The engine this server runs, through the one recipe (sharp_plugin.recipe): the
    model's ShaRP class, the server's pruning defaults, its caches and the longest video
    it takes (the engine's memory profile reserves that video's scoring pass), and the
    media limits per prompt."""
    engine = settings.engine
    sharp_config: dict[str, Any] = {"sharp_vision_cache_mb": engine.vision_cache_mb}
    if settings.media.max_video_tokens:
        sharp_config["sharp_max_video_tokens"] = settings.media.max_video_tokens
    # EngineSettings fields are EngineArgs fields of the same name, except ours; unset
    # (None) ones keep vLLM's defaults.
    own_fields = engine.model_dump(
        exclude={"model", "architecture", "vision_cache_mb", "extra_engine_args"}, exclude_none=True
    )
    return recipe.engine_args(
        engine.model,
        architecture=engine.architecture,
        sharp_defaults=settings.sharp,
        sharp_config=sharp_config,
        limit_mm_per_prompt={
            "video": settings.media.max_videos_per_request,
            "image": settings.media.max_images_per_request,
        },
        **own_fields,
        **engine.extra_engine_args,
    )


class VLLMEngine:
    def __init__(self, settings: ServerSettings):
        args = server_engine_args(settings)
        self._llm = recipe.build_async_llm(**args)
        engine = settings.engine
        self.model_name = engine.name
        self.tokenizer = self._llm.get_tokenizer()
        hf_config = self._llm.model_config.hf_config
        self.num_decoder_layers = int(hf_config.get_text_config().num_hidden_layers)
        self.first_stage_layers = _first_stage_layers(self.num_decoder_layers, engine.pipeline_parallel_size)
        self.max_num_seqs = int(self._llm.vllm_config.scheduler_config.max_num_seqs)
        self._seen_selections: BoundedStore[bool] = BoundedStore(1 << 16)

    def check_sampling(self, sampling: dict[str, Any]) -> None:
        check_sampling(sampling)

    def render_prompt(self, messages: list[dict[str, Any]]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    async def generate(self, request, sampling, request_id):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        try:
            params = SamplingParams(**sampling, output_kind=RequestOutputKind.DELTA)
            # Cancelling this generator (client gone, timeout) aborts the engine request:
            # AsyncLLM.generate aborts in its own cancellation handler.
            async for output in self._llm.generate(request, params, request_id):
                yield output
        except Exception as exc:
            raise engine_error(exc) from exc

    async def abort(self, request_id: str) -> None:
        await self._llm.abort(request_id)

    async def sharp_report(self, report_id: str) -> list[tuple[VideoReport, bool]]:
        """Each video's report, and whether its selection came from the encoder cache."""
        record = FRONTEND_RECORDS.pop(report_id)
        if not record:
            return []
        replies = await self._llm.collective_rpc(
            "sharp_reports", args=([item["mm_hash"] for item in record],)
        )
        reports = []
        for report in join_report(record, merge_replies(replies)):
            # An encoder-cache hit runs no selection and answers with the stored one:
            # say so, instead of repeating (and counting again) its scoring time.
            selection = report.selection_id
            cached = selection is not None and self._seen_selections.get(selection) is not None
            if selection is not None:
                self._seen_selections.put(selection, True)
            reports.append((report, cached))
        return reports

    async def check_health(self) -> None:
        if self._llm.errored:
            raise self._llm.dead_error
        await self._llm.check_health()

    def is_dead(self) -> bool:
        return self._llm.errored

    def num_unfinished_requests(self) -> int:
        return self._llm.output_processor.get_num_unfinished_requests()

    def shutdown(self) -> None:
        self._llm.shutdown()


def _first_stage_layers(num_layers: int, pipeline_stages: int) -> int:
    """Decoder layers held by the first pipeline stage: the scoring pass runs there."""
    from vllm.distributed.utils import get_pp_indices

    start, end = get_pp_indices(num_layers, 0, pipeline_stages)
    return end - start
