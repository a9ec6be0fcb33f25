"""OpenAI Files API shape: create (multipart), list, retrieve, delete. A video is
probed on upload with the configured decoder and refused with a 4xx if it is not a usable video."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile as StarletteUploadFile
from starlette.formparsers import MultiPartException

from ..deps import Authorized, SettingsDep, StoreDep
from ..errors import InvalidRequest, PayloadTooLarge, error_responses
from ..media import video

PURPOSES = ("user_data", "vision", "assistants")

router = APIRouter(prefix="/v1/files", tags=["files"], dependencies=[Authorized])

_CHUNK = 1 << 20
# The multipart body as the OpenAPI spec shows it; the route reads it itself (below).
_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {"type": "string", "enum": list(PURPOSES)},
                    },
                }
            }
        },
    }
}


@router.post("", openapi_extra=_UPLOAD_BODY, responses=error_responses(400, 401, 413, 415))
async def create_file(request: Request, settings: SettingsDep, store: StoreDep):
    # The route reads the body itself, so that the store's limit is checked before one
    # byte of it is (the API key and the body-size cap come first, in server.guard).
    if store.count() >= settings.files.max_files:
        raise InvalidRequest(
            f"The server holds its limit of {settings.files.max_files} files; delete some first",
            param="file",
            code="file_limit_reached",
        )
    cap = settings.media.max_upload_bytes
    try:
        form = await request.form(max_files=1, max_fields=4)
    except MultiPartException as exc:
        raise InvalidRequest(f"Invalid multipart body: {exc.message}", param="file") from None
    try:
        file, purpose = form.get("file"), form.get("purpose")
        if not isinstance(file, StarletteUploadFile):
            raise InvalidRequest("A multipart field 'file' with the video is required", param="file")
        if purpose not in PURPOSES:
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
    finally:
        await form.close()  # the spooled upload's temporary file goes now, not at GC
    return stored.openai()


def _probe(path: Path, settings) -> dict:
    info = video.probe(path, video.get_decoder(settings.media.decoder, settings.media.decode_device))
    video.check_limits(info, settings.media)
    return {
        "frames": info.num_frames,
        "fps": info.fps,
        "duration_s": info.duration_s,
        "width": info.width,
        "height": info.height,
    }


async def _copy(upload: StarletteUploadFile, target: Path, cap: int) -> int:
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


@router.get("", responses=error_responses(401))
async def list_files(store: StoreDep) -> dict:
    return {"object": "list", "data": [f.openai() for f in store.list()]}


@router.get("/{file_id}", responses=error_responses(401, 404))
async def retrieve_file(file_id: str, store: StoreDep) -> dict:
    return store.get(file_id).openai()


@router.delete("/{file_id}", responses=error_responses(401, 404))
async def delete_file(file_id: str, store: StoreDep) -> dict:
    store.get(file_id)  # 404 for an unknown id
    store.delete(file_id)
    return {"id": file_id, "object": "file", "deleted": True}
