"""The vision tower's output for a call's videos: cached by video content, and run in
bounded chunks.

A follow-up question on a known video has a new mm_hash (the question is part of its
selection), so vLLM's encoder cache misses; the tower's output depends on the pixels
alone, so this cache, keyed by the content hash, serves it. Memory-profiling dummies are
never cached; the profile instead reserves the cache's whole budget."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .bounded_store import BoundedStore, nested_tensor_bytes
from .family import SharpModelFamily
from .item_fields import ItemRow

# 512 MiB holds about 17 videos of N = 4096 tokens at Qwen2.5-VL-7B's width (3584, bf16).
DEFAULT_CACHE_MB = 512
# 64k patches is 64 temporal groups of a 448 x 448 Qwen-VL video (about 2 minutes at
# 1 fps); a 7B tower's widest activation ([patches, 3420] in bf16) is then under 0.5 GB,
# however long the video.
DEFAULT_CHUNK_PATCHES = 1 << 16


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

    def embed(self, video_input, rows: Sequence[ItemRow | None]) -> tuple[list[torch.Tensor], list[bool]]:
        """Each video's tower output, and whether it came from the content cache. The
        tower runs once, over the videos the cache misses."""
        keys = [row.content_hash if row is not None and not row.profiling else None for row in rows]
        found = [self.cache.get(key) if self.cache is not None and key else None for key in keys]
        from_cache = [emb is not None for emb in found]
        missing = [index for index, cached in enumerate(from_cache) if not cached]
        if missing:
            subset = (
                video_input
                if len(missing) == len(rows)
                else self.family.sharp_video_subset(video_input, missing)
            )
            for index, emb in zip(missing, self.family.sharp_embed_videos(subset), strict=True):
                found[index] = emb
                if self.cache is not None and keys[index]:
                    # Each output is a view of the tower's one output tensor: a cached view
                    # would keep all of it alive while the cache counts only its share.
                    self.cache.put(keys[index], emb if len(missing) == 1 else emb.clone())
        if any(row is not None and row.profiling for row in rows):
            self._reserve(found[0].device)
        return found, from_cache

    def _reserve(self, device: torch.device) -> None:
        """During vLLM's memory profile: allocate the cache's whole budget once, so the
        profiled peak (and with it the KV cache's size) leaves room for the cache."""
        if self.cache_bytes:
            reserve = torch.empty(self.cache_bytes, dtype=torch.uint8, device=device)
            del reserve
