"""create_app() only assembles the application: routers, error handlers, state."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI, Request

from .engine import Engine
from .errors import install_error_handlers
from .media.store import FileStore
from .metrics import ServerMetrics
from .routers import chat, files, health, models
from .settings import ServerSettings

logger = logging.getLogger(__name__)

_PURGE_INTERVAL_S = 300


def create_app(
    settings: ServerSettings, engine_factory: Callable[[ServerSettings], Engine] | None = None
) -> FastAPI:
    """`engine_factory` builds the engine at start-up (default: vLLM's AsyncLLM)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        factory = engine_factory
        if factory is None:
            from .engine import VLLMEngine

            factory = VLLMEngine
        app.state.engine = factory(settings)
        purge = asyncio.create_task(_purge_periodically(app.state.store))
        try:
            yield
        finally:
            purge.cancel()
            app.state.decode_pool.shutdown(wait=False, cancel_futures=True)
            app.state.engine.shutdown()

    app = FastAPI(title="sharp-serve", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = ServerMetrics()
    app.state.store = FileStore(settings.files.directory, settings.files.ttl_s)
    # Decoding is blocking: a bounded pool keeps it off the event loop without letting
    # many long decodes take every core from the engine.
    app.state.decode_pool = ThreadPoolExecutor(
        max_workers=settings.media.decode_threads, thread_name_prefix="decode"
    )
    install_error_handlers(app)

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        app.state.metrics.requests.labels(path, str(response.status_code)).inc()
        if response.status_code >= 400:
            app.state.metrics.errors.labels(_error_type(response.status_code)).inc()
        return response

    for module in (chat, files, models, health):
        app.include_router(module.router)
    return app


def _error_type(status: int) -> str:
    return {
        400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
        404: "not_found_error", 413: "payload_too_large", 415: "unsupported_media",
        422: "invalid_request_error", 503: "service_unavailable", 504: "timeout_error",
    }.get(status, "server_error" if status >= 500 else "invalid_request_error")  # fmt: skip


async def _purge_periodically(store: FileStore) -> None:
    while True:
        await asyncio.sleep(_PURGE_INTERVAL_S)
        try:
            purged = await asyncio.to_thread(store.purge_expired)
            if purged:
                logger.info("purged %d expired files", purged)
        except OSError:
            logger.exception("file purge failed")
