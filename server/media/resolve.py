"""Turn a chat request's content parts into decoded media and template messages.

Blocking work (decoding, probing) runs in the app's bounded decode pool, so one long
decode never stalls the event loop or the other streams."""

from __future__ import annotations

import asyncio
import functools
import tempfile
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidRequest
from ..metrics import ServerMetrics
from ..schemas import ChatCompletionRequest, ContentPart
from ..settings import ServerSettings
from . import sources, video
from .store import FileStore


@dataclass
class ResolvedMedia:
    messages: list[dict[str, Any]]  # for the chat template
    videos: list[video.DecodedVideo] = field(default_factory=list)
    images: list[Any] = field(default_factory=list)

    def multi_modal_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.videos:
            data["video"] = [v.vllm_input() for v in self.videos]
        if self.images:
            data["image"] = list(self.images)
        return data


async def resolve(
    body: ChatCompletionRequest,
    settings: ServerSettings,
    store: FileStore,
    pool: Executor,
    metrics: ServerMetrics,
) -> ResolvedMedia:
    parts = [p for m in body.messages if isinstance(m.content, list) for p in m.content]
    num_videos = sum(p.type in ("video_url", "file") for p in parts)
    num_images = sum(p.type == "image_url" for p in parts)
    limits = settings.media
    if num_videos > limits.max_videos_per_request:
        raise InvalidRequest(f"At most {limits.max_videos_per_request} videos per request", param="messages")
    if num_images > limits.max_images_per_request:
        raise InvalidRequest(f"At most {limits.max_images_per_request} images per request", param="messages")
    sampling = body.media_io_kwargs.video if body.media_io_kwargs and body.media_io_kwargs.video else None
    num_frames, fps = (sampling.num_frames, sampling.fps) if sampling else (None, None)
    decode = functools.partial(
        video.decode,
        sampling=sampling.sampling if sampling else "uniform",
        readers=settings.media.decode_readers,
        decoder=settings.media.decoder,
        device=settings.media.decode_device,
    )

    resolved = ResolvedMedia(messages=[])
    token_budget = limits.max_video_tokens  # unpruned visual tokens left for this request
    with tempfile.TemporaryDirectory(prefix="sharp-media-") as scratch:
        for message in body.messages:
            if not isinstance(message.content, list):
                resolved.messages.append({"role": message.role, "content": message.content or ""})
                continue
            content = []
            for part in message.content:
                if part.type == "text":
                    content.append({"type": "text", "text": part.text})
                elif part.type == "image_url":
                    resolved.images.append(await _image(part, settings, pool))
                    content.append({"type": "image"})
                else:
                    path = await _video_path(part, settings, store, Path(scratch), len(resolved.videos))
                    started = time.perf_counter()
                    decoded = await asyncio.get_running_loop().run_in_executor(
                        pool,
                        functools.partial(decode, max_tokens=token_budget),
                        path,
                        limits,
                        num_frames,
                        fps,
                    )
                    if token_budget is not None:
                        token_budget -= decoded.estimated_tokens
                    metrics.decode_seconds.observe(time.perf_counter() - started)
                    resolved.videos.append(decoded)
                    content.append({"type": "video"})
            resolved.messages.append({"role": message.role, "content": content})
    return resolved


async def _video_path(
    part: ContentPart, settings: ServerSettings, store: FileStore, scratch: Path, index: int
) -> Path:
    if part.type == "file":
        return store.path(part.file.file_id)
    source = await _open_url(
        part.video_url.url, settings, max_remote_bytes=settings.media.max_upload_bytes, param="video_url.url"
    )
    if isinstance(source, Path):
        return source  # an allowed local file is decoded in place
    path = scratch / f"video-{index}"
    path.write_bytes(source)
    return path


async def _image(part: ContentPart, settings: ServerSettings, pool: Executor):
    source = await _open_url(
        part.image_url.url, settings, max_remote_bytes=settings.media.max_inline_bytes, param="image_url.url"
    )
    data = source.read_bytes() if isinstance(source, Path) else source
    return await asyncio.get_running_loop().run_in_executor(
        pool, sources.open_image, data, settings.media.max_image_pixels
    )


async def _open_url(url: str, settings: ServerSettings, *, max_remote_bytes: int, param: str) -> Path | bytes:
    """An allowed local file's path, or the bytes behind a data: or allowed remote URL."""
    if url.startswith("data:"):
        return sources.decode_data_url(url, settings.media.max_inline_bytes)[1]
    if url.startswith("file://"):
        return sources.local_path(url, settings.security, settings.media.max_local_file_bytes)
    if url.startswith(("https://", "http://")):
        return await sources.fetch_remote(url, settings.security, settings.media, max_bytes=max_remote_bytes)
    kind = param.split(".")[0]
    raise InvalidRequest(f"{kind} must be a data:, https:// or file:// URL", param=param)
