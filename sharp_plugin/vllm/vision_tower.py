"""The vision tower's output for a call's videos: cached by video content, and run in
bounded chunks.

A follow-up question on a known video has a new mm_hash (the question is part of its
selection), so vLLM's encoder cache misses; the tower's output depends on the pixels
alone, so this cache, keyed by the content hash, serves it. Memory-profiling dummies are
never cached; the profile instead reserves the cache's whole budget."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sharp_plugin.core.redundancy import present_groups

from .bounded_store import BoundedStore, nested_tensor_bytes
from .family import SharpModelFamily
from .item_fields import ItemRow

# 512 MiB holds about 17 videos of N = 4096 tokens at Qwen2.5-VL-7B's width (3584, bf16).
DEFAULT_CACHE_MB = 512
# 64k patches is 64 temporal groups of a 448 x 448 Qwen-VL video (about 2 minutes at
# 1 fps); a 7B tower's widest activation ([patches, 3420] in bf16) is then under 0.5 GB,
# however long the video.
DEFAULT_CHUNK_PATCHES = 1 << 16


@dataclass(frozen=True)
class TowerOutput:
    embeddings: list[torch.Tensor]  # per video: [N' (+ appended rows), D], N' = tokens not skipped
    from_cache: list[bool]
    tower_ms: list[float]  # per video: the wall time of the tower call that embedded it (0: cached)


def _cache_key(row: ItemRow | None) -> str | None:
    """The content hash, and which groups were skipped (the output holds the others)."""
    if row is None or row.profiling or not row.content_hash:
        return None
    if not row.skipped_groups:
        return row.content_hash
    return f"{row.content_hash}/without/{','.join(map(str, row.skipped_groups))}"


def _elapsed_ms(started: float) -> float:
    """Wall time since `started`, once the device has finished the work queued (on an
    accelerator the tower's kernels run after the call returns; the selection needs its
    output next anyway, so waiting here costs little)."""
    if torch.accelerator.is_available():
        torch.accelerator.synchronize()
    return (time.perf_counter() - started) * 1e3


class VisionTower:
    """Set from the HF config (`--hf-overrides`): `sharp_vision_cache_mb` (0 turns the
    cache off) and `sharp_tower_chunk_patches` (0 runs each video whole)."""

    def __init__(self, family: SharpModelFamily, config):
        self.family = family
        self.cache_bytes = int(getattr(config, "sharp_vision_cache_mb", DEFAULT_CACHE_MB)) << 20
        self.chunk_patches = int(getattr(config, "sharp_tower_chunk_patches", DEFAULT_CHUNK_PATCHES))
        self.cache: BoundedStore[torch.Tensor] | None = (
            BoundedStore(max_bytes=self.cache_bytes, size_of=nested_tensor_bytes)
            if self.cache_bytes
            else None
        )

    def embed(self, video_input, rows: Sequence[ItemRow | None]) -> TowerOutput:
        """Each video's tower output (of the groups not skipped), whether it came from the
        content cache, and the tower's time. The tower runs once over the videos the cache
        misses that skip nothing, and once per video that skips static groups."""
        keys = [_cache_key(row) for row in rows]
        found = [self.cache.get(key) if self.cache is not None and key else None for key in keys]
        from_cache = [emb is not None for emb in found]
        missing = [index for index, cached in enumerate(from_cache) if not cached]
        whole = [index for index in missing if rows[index] is None or not rows[index].skipped_groups]
        tower_ms = [0.0] * len(rows)
        started = time.perf_counter()
        if whole:
            subset = (
                video_input if len(whole) == len(rows) else self.family.sharp_video_subset(video_input, whole)
            )
            outputs = self.family.sharp_embed_videos(subset)
            elapsed = _elapsed_ms(started)  # the call's time, shared by its videos
            for index, emb in zip(whole, outputs, strict=True):
                found[index], tower_ms[index] = emb, elapsed
        for index in (index for index in missing if index not in whole):
            started = time.perf_counter()
            row = rows[index]
            groups = present_groups(row.redundancy["groups"], row.skipped_groups).tolist()
            (found[index],) = self.family.sharp_embed_videos(
                self.family.sharp_video_groups(video_input, index, groups)
            )
            tower_ms[index] = _elapsed_ms(started)
        if self.cache is not None:
            for index in (index for index in missing if keys[index]):
                # Outputs of one call are views of its one output tensor: a cached view
                # would keep all of it alive while the cache counts only its share.
                shared = index in whole and len(whole) > 1
                self.cache.put(keys[index], found[index].clone() if shared else found[index])
        if any(row is not None and row.profiling for row in rows):
            self._reserve(found[0].device)
        return TowerOutput(found, from_cache, tower_ms)

    def _reserve(self, device: torch.device) -> None:
        """During vLLM's memory profile: allocate the cache's whole budget once, so the
        profiled peak (and with it the KV cache's size) leaves room for the cache."""
        if self.cache_bytes:
            reserve = torch.empty(self.cache_bytes, dtype=torch.uint8, device=device)
            del reserve
