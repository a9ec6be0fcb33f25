from __future__ import annotations

import time

from fastapi import APIRouter

from ..deps import Authorized, EngineDep
from ..errors import error_responses

router = APIRouter(prefix="/v1", tags=["models"], dependencies=[Authorized])
_STARTED = int(time.time())


@router.get("/models", responses=error_responses(401))
async def list_models(engine: EngineDep) -> dict:
    return {
        "object": "list",
        "data": [
            {"id": engine.model_name, "object": "model", "created": _STARTED, "owned_by": "sharp-serve"}
        ],
    }
