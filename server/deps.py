"""FastAPI dependencies: engine, settings, file store, metrics, auth."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from .admission import Admission
from .engine import Engine
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


def get_admission(request: Request) -> Admission:
    return request.app.state.admission


def get_presets(request: Request) -> dict[str, dict[str, Any]]:
    return request.app.state.presets


# The API key is checked before the body is read, by server.guard.RequestGuard, which
# create_app() always installs; this dependency only declares the Bearer scheme in the
# OpenAPI spec for the routes that need the key.
_bearer = HTTPBearer(auto_error=False, description="The server's API key (only when it has one)")


SettingsDep = Annotated[ServerSettings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
StoreDep = Annotated[FileStore, Depends(get_store)]
MetricsDep = Annotated[ServerMetrics, Depends(get_metrics)]
AdmissionDep = Annotated[Admission, Depends(get_admission)]
PresetsDep = Annotated[dict[str, dict[str, Any]], Depends(get_presets)]
Authorized = Depends(_bearer)
