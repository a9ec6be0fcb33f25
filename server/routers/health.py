from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from ..deps import EngineDep, MetricsDep
from ..errors import EngineUnavailable, error_responses

router = APIRouter(tags=["operations"])


@router.get("/health", responses=error_responses(503))
async def health(engine: EngineDep) -> dict:
    try:
        await engine.check_health()
    except EngineUnavailable:
        raise  # restarting, or given up: it says so, with when to retry
    except Exception as exc:
        raise EngineUnavailable(f"Engine is not healthy: {type(exc).__name__}", code="engine_dead") from exc
    return {"status": "ok"}


@router.get("/metrics")
async def metrics(metrics: MetricsDep, engine: EngineDep) -> Response:
    metrics.unfinished_requests.set(engine.num_unfinished_requests())
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
