"""Cache identity: the hash that vLLM's processor, encoder and prefix caches key a video
by covers exactly what changes its selection, so no cache can serve a stale selection,
and items that prune nothing share entries across questions and settings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vllm.multimodal.hasher import MultiModalHasher

from sharp_plugin.core import NO_PRUNING, SharpSettings


def canonical_settings(settings: SharpSettings) -> SharpSettings:
    """Items that drop nothing all carry the same settings, so identical pixels give
    identical fields whatever else the request said."""
    return settings if settings.prunes or settings.skip_static else NO_PRUNING


def item_identity(
    settings: SharpSettings, prefix: Sequence[int], suffix: Sequence[int], context: Sequence[str] = ()
) -> dict[str, Any]:
    """What the selection of one video depends on, besides its pixels.

    Only the scoring methods read the prompt text (and the media before the video, which
    the scoring pass sees); `none` and retention 1.0 keep everything, so those items
    share cache entries with each other and across questions.
    """
    if not settings.prunes and not settings.skip_static:
        return {}
    identity: dict[str, Any] = {"settings": settings.effective().model_dump()}
    if settings.needs_scoring_pass:
        identity["prefix"] = list(prefix)
        identity["suffix"] = list(suffix)
        if context:
            identity["context"] = list(context)
    return identity


def earlier_hashes(
    order: list[str], video_index: int, image_hashes: list[str], video_hashes: list[str]
) -> list[str]:
    """Cache hashes of the media items before the `video_index`-th video, in prompt order
    (`order`: "image" / "video" per item; earlier videos by their ShaRP hash, which
    `video_hashes` holds so far)."""
    seen = {"image": 0, "video": 0}
    context = []
    for kind in order:
        if kind == "video" and seen["video"] == video_index:
            break
        hashes = image_hashes if kind == "image" else video_hashes
        if seen[kind] < len(hashes):
            context.append(hashes[seen[kind]])
        seen[kind] += 1
    return context


def video_cache_hashes(
    algorithm: str,
    content_hashes: Sequence[str],
    settings: SharpSettings,
    items: Sequence[dict[str, Any]],
    order: list[str],
    image_hashes: list[str],
) -> tuple[list[str], list[list[str]]]:
    """Each video's cache hash (its content hash, combined with its identity when it
    prunes) and its context (the cache hashes of the media before it). `content_hashes`:
    vLLM's own hash of each video's pixels and processing kwargs, without `sharp`."""
    video_hashes: list[str] = []
    contexts: list[list[str]] = []
    for index, content_hash in enumerate(content_hashes):
        item = items[index] if index < len(items) else {"prefix": [], "suffix": []}
        context = earlier_hashes(order, index, image_hashes, video_hashes)
        identity = item_identity(settings, item["prefix"], item["suffix"], context)
        video_hashes.append(
            MultiModalHasher.hash_kwargs(algorithm, video=content_hash, sharp=identity)
            if identity
            else content_hash
        )
        contexts.append(context)
    return video_hashes, contexts
