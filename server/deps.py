"""FastAPI dependencies: engine, settings, file store, metrics, auth."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .engine import Engine
from .errors import AuthenticationError
from .guard import api_key_ok
from .media.store import FileStore
from .metrics import ServerMetrics
from .settings import ServerSettings


def get_settings(request: Request) -> ServerSettings:
    return request.app.state.settings


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_store(request: Request) -> FileStore:
    return request.app.state.store


def get_metrics(request: Request) -> ServerMetrics:
    return request.app.state.metrics


# Declares the Bearer scheme in the OpenAPI spec. The key is enforced before the body
# is read, by server.guard.RequestGuard; this dependency checks it again for routes
# mounted without the guard (tests build apps both ways).
_bearer = HTTPBearer(auto_error=False, description="The server's API key (only when it has one)")


def require_api_key(
    request: Request,
    settings: Annotated[ServerSettings, Depends(get_settings)],
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    expected = settings.security.api_key
    if expected is not None and not api_key_ok(
        {"authorization": request.headers.get("authorization", "")}, expected.get_secret_value()
    ):
        raise AuthenticationError("Invalid or missing API key", code="invalid_api_key")


SettingsDep = Annotated[ServerSettings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
StoreDep = Annotated[FileStore, Depends(get_store)]
MetricsDep = Annotated[ServerMetrics, Depends(get_metrics)]
Authorized = Depends(require_api_key)
