"""One engine request: its outputs as they come, its token counts and its metrics. A run
that does not finish (the client left, a timeout, an engine failure) aborts its engine
request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from ..engine import Engine
from ..media.resolve import ResolvedMedia
from ..metrics import ServerMetrics


class EngineRun:
    def __init__(
        self,
        engine: Engine,
        engine_request: dict[str, Any],
        sampling: dict[str, Any],
        request_id: str,
        report_id: str,
        media: ResolvedMedia,
        received: float,
        metrics: ServerMetrics,
    ):
        self.engine, self.engine_request, self.sampling = engine, engine_request, sampling
        self.request_id, self.report_id, self.media = request_id, report_id, media
        self.received, self.metrics = received, metrics
        self.created = int(time.time())
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.finished = False
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

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }
