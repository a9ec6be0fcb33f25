"""OpenAI Files API shape: create (multipart), list, retrieve, delete. A video is
probed with decord on upload and refused with a 4xx if it is not a usable video."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import APIRouter, Form, Request, UploadFile

from .. import video
from ..deps import Authorized, SettingsDep, StoreDep
from ..errors import InvalidRequest, PayloadTooLarge

router = APIRouter(prefix="/v1/files", tags=["files"], dependencies=[Authorized])

_CHUNK = 1 << 20
# Multipart framing around the file; a Content-Length beyond cap + this is refused early.
_MULTIPART_OVERHEAD = 64 * 1024


@router.post("")
async def create_file(
    request: Request, file: UploadFile, settings: SettingsDep, store: StoreDep, purpose: str = Form(...)
):
    cap = settings.media.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap + _MULTIPART_OVERHEAD:
        raise PayloadTooLarge(f"Upload is over the limit of {cap} bytes", param="file", code="file_too_large")
    if purpose not in ("user_data", "vision", "assistants"):
        raise InvalidRequest(f"Unsupported purpose {purpose!r}; use 'user_data'", param="purpose")
    file_id, partial = store.new_partial()
    try:
        written = await _copy(file, partial, cap)
        if written == 0:
            raise InvalidRequest("The uploaded file is empty", param="file", code="empty_file")
        info = await asyncio.get_running_loop().run_in_executor(
            request.app.state.decode_pool, _probe, partial, settings
        )
        stored = store.commit(file_id, partial, file.filename or "upload", purpose, info)
    finally:
        partial.unlink(missing_ok=True)  # no-op after commit renamed it
    return stored.openai()


def _probe(path: Path, settings) -> dict:
    info = video.probe(path)
    video.check_limits(info, settings.media)
    return {
        "frames": info.num_frames,
        "fps": info.fps,
        "duration_s": info.duration_s,
        "width": info.width,
        "height": info.height,
    }


async def _copy(upload: UploadFile, target: Path, cap: int) -> int:
    written = 0
    with target.open("wb") as out:
        while chunk := await upload.read(_CHUNK):
            written += len(chunk)
            if written > cap:
                raise PayloadTooLarge(
                    f"Upload is over the limit of {cap} bytes", param="file", code="file_too_large"
                )
            out.write(chunk)
    return written


@router.get("")
async def list_files(store: StoreDep) -> dict:
    return {"object": "list", "data": [f.openai() for f in store.list()]}


@router.get("/{file_id}")
async def retrieve_file(file_id: str, store: StoreDep) -> dict:
    return store.get(file_id).openai()


@router.delete("/{file_id}")
async def delete_file(file_id: str, store: StoreDep) -> dict:
    store.get(file_id)  # 404 for an unknown id
    store.delete(file_id)
    return {"id": file_id, "object": "file", "deleted": True}
