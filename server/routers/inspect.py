"""The inspection page: what ShaRP kept of a video, drawn over its sampled frames.

GET /inspect serves static HTML and JavaScript shipped with the package (no build step,
no CDN), open like /health because it holds no data. Everything it shows comes from
authorised API calls made by the page with the key the user types in:
- POST /v1/inspect/frames: the frames a chat request would sample from a video (the
  same resolution, limits and decoder), as JPEG data URLs;
- POST /v1/chat/completions with `sharp.return_selection`: the answer, the report and
  each video's kept token indices, drawn over those frames.
"""

from __future__ import annotations

import asyncio
import base64
import io
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict

from ..deps import Authorized, MetricsDep, SettingsDep, StoreDep
from ..errors import InvalidRequest, NotFound, error_responses
from ..media import resolve
from ..schemas import ChatCompletionRequest, ContentPart, MediaIOKwargs

# Served without the API key (guard.OPEN_PATHS): static files with no data in them.
PAGE_PATHS = ("/inspect", "/inspect/inspect.js", "/inspect/inspect.css")
_MEDIA_TYPES = {"html": "text/html", "js": "text/javascript", "css": "text/css"}
JPEG_QUALITY = 85

page = APIRouter(tags=["inspect"], include_in_schema=False)
api = APIRouter(prefix="/v1/inspect", tags=["inspect"], dependencies=[Authorized])


def _static(name: str) -> bytes:
    return resources.files("server").joinpath("static", name).read_bytes()


@page.get("/inspect")
async def inspect_page(settings: SettingsDep) -> HTMLResponse:
    _check_enabled(settings)
    return HTMLResponse(_static("inspect.html"))


@page.get("/inspect/{name}")
async def inspect_asset(name: str, settings: SettingsDep) -> Response:
    _check_enabled(settings)
    if f"/inspect/{name}" not in PAGE_PATHS:
        raise NotFound(f"No such file: {name}", code="not_found")
    return Response(_static(name), media_type=_MEDIA_TYPES[name.rsplit(".", 1)[1]])


class FramesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    video: ContentPart  # a `video_url` or `file` part, as in a chat message
    media_io_kwargs: MediaIOKwargs | None = None


@api.post("/frames", responses=error_responses(400, 401, 403, 404, 413, 415))
async def sampled_frames(
    body: FramesRequest, request: Request, settings: SettingsDep, store: StoreDep, metrics: MetricsDep
) -> dict:
    """The frames a chat request with this video part and these media_io_kwargs would
    decode, with their times in the source: what the kept token indices refer to."""
    _check_enabled(settings)
    if body.video.type not in ("video_url", "file"):
        raise InvalidRequest("`video` must be a `video_url` or `file` part", param="video")
    chat = ChatCompletionRequest(
        model="", messages=[{"role": "user", "content": [body.video]}], media_io_kwargs=body.media_io_kwargs
    )
    media = await resolve.resolve(chat, settings, store, request.app.state.decode_pool, metrics)
    decoded = media.videos[0]
    images = await asyncio.to_thread(_jpeg_data_urls, decoded.frames)
    return {
        "object": "list",
        "data": [
            {"index": index, "timestamp": round(source / decoded.info.fps, 6), "image": image}
            for index, (source, image) in enumerate(zip(decoded.indices, images, strict=True))
        ],
        "width": int(decoded.frames.shape[2]),
        "height": int(decoded.frames.shape[1]),
    }


def _jpeg_data_urls(frames) -> list[str]:
    from PIL import Image

    urls = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=JPEG_QUALITY)
        urls.append("data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode())
    return urls


def _check_enabled(settings) -> None:
    if not settings.inspect_page:
        raise NotFound("The inspection page is turned off (inspect_page: false)", code="not_found")
