"""FastAPI dependencies: engine, settings, file store, metrics, auth."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request

from .engine import Engine
from .errors import AuthenticationError
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


def require_api_key(request: Request, settings: Annotated[ServerSettings, Depends(get_settings)]) -> None:
    expected = settings.security.api_key
    if expected is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip(), expected.get_secret_value()):
        raise AuthenticationError("Invalid or missing API key", code="invalid_api_key")


SettingsDep = Annotated[ServerSettings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
StoreDep = Annotated[FileStore, Depends(get_store)]
MetricsDep = Annotated[ServerMetrics, Depends(get_metrics)]
Authorized = Depends(require_api_key)
