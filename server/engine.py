"""vLLM's AsyncLLM, in-process, with the plugin. The server talks to vLLM only through
this class and vLLM's public engine API (generate, abort, collective_rpc, check_health)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol

from sharp_plugin import WORKER_EXTENSION
from sharp_plugin.core import SharpSettingsError
from sharp_plugin.vllm.reports import FRONTEND_RECORDS, join_report

from .errors import EngineUnavailable, InvalidRequest
from .settings import ServerSettings

logger = logging.getLogger(__name__)


class Engine(Protocol):
    """What the routes need; `VLLMEngine` is the real one, tests may pass a fake."""

    model_name: str
    num_decoder_layers: int

    def render_prompt(self, messages: list[dict[str, Any]]) -> str: ...

    def generate(
        self, request: dict[str, Any], sampling: dict[str, Any], request_id: str
    ) -> AsyncIterator[Any]: ...

    async def abort(self, request_id: str) -> None: ...

    async def sharp_report(self, report_id: str) -> list[dict[str, Any]]: ...

    async def check_health(self) -> None: ...

    def num_unfinished_requests(self) -> int: ...

    def shutdown(self) -> None: ...


class VLLMEngine:
    def __init__(self, settings: ServerSettings):
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        engine = settings.engine
        hf_overrides: dict[str, Any] = {"architectures": [engine.architecture]}
        if settings.sharp:
            hf_overrides["sharp_defaults"] = settings.sharp
        # EngineSettings fields are AsyncEngineArgs fields of the same name, except the two
        # that are ours; unset (None) ones keep vLLM's defaults.
        own_fields = engine.model_dump(exclude={"architecture", "extra_engine_args"}, exclude_none=True)
        args = AsyncEngineArgs(
            **own_fields,
            hf_overrides=hf_overrides,
            worker_extension_cls=WORKER_EXTENSION,
            limit_mm_per_prompt={
                "video": settings.media.max_videos_per_request,
                "image": settings.media.max_images_per_request,
            },
            **engine.extra_engine_args,
        )
        self._llm = AsyncLLM.from_engine_args(args)
        self.model_name = engine.name
        self.tokenizer = self._llm.get_tokenizer()
        hf_config = self._llm.model_config.hf_config
        self.num_decoder_layers = int(hf_config.get_text_config().num_hidden_layers)

    def render_prompt(self, messages: list[dict[str, Any]]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    async def generate(self, request, sampling, request_id):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.exceptions import EngineDeadError

        try:
            params = SamplingParams(**sampling, output_kind=RequestOutputKind.DELTA)
            # Cancelling this generator (client gone, timeout) aborts the engine request:
            # AsyncLLM.generate aborts in its own cancellation handler.
            async for output in self._llm.generate(request, params, request_id):
                yield output
        except EngineDeadError as exc:
            raise EngineUnavailable("The engine has stopped", code="engine_dead") from exc
        except SharpSettingsError:
            raise
        except ValueError as exc:  # vLLM's input validation (prompt too long, bad params)
            raise InvalidRequest(str(exc), code="invalid_request") from exc

    async def abort(self, request_id: str) -> None:
        await self._llm.abort(request_id)

    async def sharp_report(self, report_id: str) -> list[dict[str, Any]]:
        record = FRONTEND_RECORDS.pop(report_id)
        if not record:
            return []
        replies = await self._llm.collective_rpc(
            "sharp_reports", args=([item["mm_hash"] for item in record],)
        )
        return join_report(record, replies[0] if replies else {})

    async def check_health(self) -> None:
        if self._llm.errored:
            raise self._llm.dead_error
        await self._llm.check_health()

    def num_unfinished_requests(self) -> int:
        return self._llm.output_processor.get_num_unfinished_requests()

    def shutdown(self) -> None:
        self._llm.shutdown()
