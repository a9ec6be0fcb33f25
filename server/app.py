"""create_app() only assembles the application: routers, error handlers, state."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from .admission import Admission
from .engine import Engine
from .errors import install_error_handlers
from .guard import RequestGuard
from .media import video
from .media.store import FileStore
from .metrics import ServerMetrics
from .presets import load_presets
from .routers import chat, files, health, inspect, models
from .settings import ServerSettings
from .supervisor import EngineSupervisor

logger = logging.getLogger(__name__)

_PURGE_INTERVAL_S = 300
# The exit status when the engine died for good (sysexits' EX_SOFTWARE).
ENGINE_GONE_STATUS = 70


def create_app(
    settings: ServerSettings, engine_factory: Callable[[ServerSettings], Engine] | None = None
) -> FastAPI:
    """`engine_factory` builds the engine at start-up (default: vLLM's AsyncLLM)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        video.check_decoder(settings.media)  # a decoder that cannot load stops the start, with why
        factory = engine_factory
        if factory is None:
            from .engine import VLLMEngine

            factory = VLLMEngine
        app.state.engine = EngineSupervisor(settings, factory, app.state.metrics, give_up=lambda: _exit(app))
        app.state.engine.start()
        app.state.admission = Admission(
            app.state.engine.max_num_seqs + settings.max_queued_requests,
            settings.retry_after_s,
            app.state.metrics,
        )
        purge = asyncio.create_task(_purge_periodically(app.state.store))
        try:
            yield
        finally:
            purge.cancel()
            app.state.decode_pool.shutdown(wait=False, cancel_futures=True)
            app.state.engine.shutdown()

    app = FastAPI(title="sharp-serve", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.exit_status = 0
    app.state.metrics = ServerMetrics()
    app.state.store = FileStore(settings.files.directory, settings.files.ttl_s)
    app.state.presets = load_presets(settings.presets_file)
    # Decoding is blocking: a bounded pool keeps it off the event loop without letting
    # many long decodes take every core from the engine.
    app.state.decode_pool = ThreadPoolExecutor(
        max_workers=settings.media.decode_threads, thread_name_prefix="decode"
    )
    install_error_handlers(app)
    app.add_middleware(RequestGuard, settings=settings, metrics=lambda: app.state.metrics)
    for router in (chat.router, files.router, models.router, health.router, inspect.page, inspect.api):
        app.include_router(router)
    app.openapi = lambda: _openapi_without_422(app)
    return app


def _exit(app: FastAPI) -> None:
    """End the process with a non-zero status (the engine is gone for good): the HTTP
    server (the CLI's uvicorn.Server) shuts down gracefully, then the CLI exits with the
    status. (A SIGTERM would not do: uvicorn re-raises it once shut down, and the process
    would end by the signal instead.)"""
    app.state.exit_status = ENGINE_GONE_STATUS
    http_server = getattr(app.state, "http_server", None)
    if http_server is not None:
        http_server.should_exit = True


def _openapi_without_422(app: FastAPI) -> dict:
    """FastAPI documents a 422 for every route that validates input; this server answers
    validation errors with OpenAI's 400 (errors.py), so the spec says 400 instead."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        for path in schema["paths"].values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        schema.get("components", {}).get("schemas", {}).pop("HTTPValidationError", None)
        schema.get("components", {}).get("schemas", {}).pop("ValidationError", None)
        app.openapi_schema = schema
    return app.openapi_schema


async def _purge_periodically(store: FileStore) -> None:
    while True:
        await asyncio.sleep(_PURGE_INTERVAL_S)
        try:
            purged = await asyncio.to_thread(store.purge_expired)
            if purged:
                logger.info("purged %d expired files", purged)
        except OSError:
            logger.exception("file purge failed")
