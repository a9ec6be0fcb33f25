"""The engine behind the routes, watched: when it dies, the server recovers without a
person, by restarting it in this process or by exiting for its supervisor to.

vLLM's own API server exits when its engine dies, so that Docker or Kubernetes restarts
it. Restarting in-process is the default here (`recovery.on_engine_death: restart`): the
HTTP side stays up meanwhile and answers 503 with Retry-After (a client retries instead
of finding the port closed), uploads stay in their store, and a transient death costs
one engine start. An engine that keeps dying (more than `max_restarts` in `window_s`),
or fails to start again, ends the process with a non-zero status, so the supervisor's
own backoff takes over; `on_engine_death: exit` does that at once.

While the engine is down, in-flight requests and new ones get a 503 with Retry-After,
and /health answers 503 at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from sharp_plugin.report import VideoReport

from .engine import Engine
from .errors import EngineUnavailable
from .metrics import ServerMetrics
from .settings import ServerSettings

logger = logging.getLogger(__name__)
T = TypeVar("T")


class EngineSupervisor:
    """Implements the routes' Engine by delegating to the current engine."""

    def __init__(
        self,
        settings: ServerSettings,
        factory: Callable[[ServerSettings], Engine],
        metrics: ServerMetrics,
        give_up: Callable[[], None],
    ):
        self.settings, self.factory, self.metrics, self.give_up = settings, factory, metrics, give_up
        self.engine = factory(settings)
        self.state = "running"  # running | restarting | failed
        self._restarts: list[float] = []  # monotonic times of recent restarts
        self._watch: asyncio.Task | None = None
        # Tasks awaiting the current engine's next output, and those of a dead engine's
        # that the supervisor ended (see _end_orphans).
        self._awaiting: set[asyncio.Task] = set()
        self._orphans: set[asyncio.Task] = set()
        self.model_name = self.engine.model_name
        self.num_decoder_layers = self.engine.num_decoder_layers
        self.first_stage_layers = self.engine.first_stage_layers
        self.max_num_seqs = self.engine.max_num_seqs

    # ---- watching ------------------------------------------------------------------------
    def start(self) -> None:
        self._watch = asyncio.create_task(self._watch_engine())

    async def _watch_engine(self) -> None:
        interval = self.settings.recovery.check_interval_s
        while True:
            await asyncio.sleep(interval)
            if self.state == "running" and self.engine.is_dead():
                await self._recover()

    async def _recover(self) -> None:
        policy = self.settings.recovery
        self.metrics.engine_deaths.inc()
        self.state = "restarting"
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < policy.window_s]
        logger.error("the engine died (%d restarts in the last %g s)", len(self._restarts), policy.window_s)
        await asyncio.to_thread(_shutdown_quietly, self.engine)  # what is left of its processes
        self._end_orphans()
        if policy.on_engine_death == "exit" or len(self._restarts) >= policy.max_restarts:
            return self._fail(
                "on_engine_death: exit" if policy.on_engine_death == "exit" else "too many restarts"
            )
        await asyncio.sleep(policy.backoff_s * 2 ** len(self._restarts))
        try:
            engine = await asyncio.to_thread(self.factory, self.settings)
        except Exception:
            logger.exception("the engine did not start again")
            return self._fail("the engine did not start again")
        self._restarts.append(time.monotonic())
        self.engine, self.state = engine, "running"
        self.metrics.engine_restarts.inc()
        logger.warning("the engine is running again (restart %d)", len(self._restarts))

    def _fail(self, why: str) -> None:
        self.state = "failed"
        logger.critical("giving up on the engine (%s): exiting for the supervisor to restart", why)
        self.give_up()

    def _running(self) -> Engine:
        if self.state != "running":
            raise EngineUnavailable(
                f"The engine is {self.state}; retry shortly",
                code=f"engine_{self.state}",
                headers={"Retry-After": str(self.settings.retry_after_s)},
            )
        return self.engine

    # ---- the Engine protocol ---------------------------------------------------------------
    def check_sampling(self, sampling: dict[str, Any]) -> None:
        self.engine.check_sampling(sampling)

    def render_prompt(self, messages: list[dict[str, Any]]) -> str:
        return self.engine.render_prompt(messages)

    def generate(
        self, request: dict[str, Any], sampling: dict[str, Any], request_id: str
    ) -> AsyncIterator[Any]:
        return self._watched(self._running().generate(request, sampling, request_id))

    async def _watched(self, outputs: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """The engine's outputs, each awaited as a call to the engine (see _call)."""
        iterator = aiter(outputs)
        while True:
            try:
                output = await self._call(anext(iterator))
            except StopAsyncIteration:
                return
            yield output

    async def _call(self, awaitable: Awaitable[T]) -> T:
        """Await the engine. When its death ends the call, the caller is told when to
        retry, as one that arrives while it restarts is; a call that the death would
        leave waiting for ever is ended too (see _end_orphans)."""
        task, awaiting = asyncio.current_task(), self._awaiting
        retry_after = {"Retry-After": str(self.settings.retry_after_s)}
        awaiting.add(task)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if task not in self._orphans:
                raise
            raise EngineUnavailable(
                "The engine has stopped", code="engine_dead", headers=retry_after
            ) from None
        except EngineUnavailable as error:
            error.headers = {**retry_after, **(error.headers or {})}
            raise
        finally:
            awaiting.discard(task)
            if task in self._orphans:  # its cancellation was ours, not its caller's
                self._orphans.discard(task)
                task.uncancel()

    def _end_orphans(self) -> None:
        """End the calls still awaiting the dead engine once it is shut down. vLLM 0.32's
        AsyncLLM fails the requests it holds when its engine core dies, but not every
        call: the soak with faults found a request that waited for ever after a kill (a
        request registered as the engine died, or the report's collective_rpc sent
        then, gets no answer and no error)."""
        orphans, self._awaiting = self._awaiting, set()
        for task in orphans:
            self._orphans.add(task)
            task.cancel()

    async def abort(self, request_id: str) -> None:
        if self.state == "running":
            await self.engine.abort(request_id)

    async def sharp_report(self, report_id: str) -> list[tuple[VideoReport, bool]]:
        return await self._call(self._running().sharp_report(report_id))

    async def check_health(self) -> None:
        await self._call(self._running().check_health())

    def is_dead(self) -> bool:
        return self.state != "running" or self.engine.is_dead()

    def num_unfinished_requests(self) -> int:
        return self.engine.num_unfinished_requests() if self.state == "running" else 0

    def shutdown(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self.state != "failed":
            self.engine.shutdown()


def _shutdown_quietly(engine: Engine) -> None:
    try:
        engine.shutdown()
    except Exception:  # a dead engine's shutdown may find its processes already gone
        logger.warning("shutting the dead engine down raised", exc_info=True)
