from __future__ import annotations

import time

from fastapi import APIRouter

from ..deps import Authorized, EngineDep, PresetsDep
from ..errors import error_responses
from ..presets import model_names

router = APIRouter(prefix="/v1", tags=["models"], dependencies=[Authorized])
_STARTED = int(time.time())


@router.get("/models", responses=error_responses(401))
async def list_models(engine: EngineDep, presets: PresetsDep) -> dict:
    """The served model, and one `<model>:<preset>` entry per pruning preset."""
    return {
        "object": "list",
        "data": [
            {
                "id": name,
                "object": "model",
                "created": _STARTED,
                "owned_by": "sharp-serve",
                "root": engine.model_name,
            }
            for name in model_names(engine.model_name, presets)
        ],
    }
