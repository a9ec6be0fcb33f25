"""The wire format between the processor (frontend) and the worker: every name that
crosses vLLM's process boundary is defined here, and nowhere else.

Per request, `mm_processor_kwargs={"sharp": {...}}` carries the settings into the
processor, which adds private keys to that dict on its way through vLLM's hooks. Per
video, the processor adds batched fields to the item, which travel with it (through
the processor, encoder and prefix caches) to `embed_multimodal`:

- `sharp_item`: the item's `ItemRow`, as JSON in a uint8 tensor;
- `sharp_prefix_ids` / `sharp_suffix_ids`: the scoring pass's text around the video;
- `sharp_black_pixels`: one input row of an all-black frame, as this model's processor
  normalises it (the worker embeds the black-video prior from it).
Per image, `sharp_image_hash` carries its cache hash, so that a later video's scoring
pass can find the image's embeddings.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

# The request's key in mm_processor_kwargs.
SHARP_KWARG = "sharp"
# A key of the request's `sharp` dict that is not a setting: the frontend record of the
# request's report is filed under it (kept out of every cache key).
REPORT_ID_KEY = "report_id"

# Private keys the processor adds to the `sharp` dict between its hooks.
ITEMS_KEY = "_items"  # per video: the text around it (query_rows.py)
HASHES_KEY = "_hashes"  # per modality: the hashes vLLM's caches key items by
SETTINGS_KEY = "_settings"  # the request's validated settings
CONTENT_KEY = "_content"  # per video: the hash of its pixels alone (the vision cache's key)
# Marks vLLM's memory-profiling dummy inputs. Its value is a secret of this process, so a
# request cannot pass itself off as a profiling run.
PROFILE_KEY = "_profile"
PROFILE_TOKEN = secrets.token_hex(16)

# Batched per-item fields (MultiModalFieldConfig.batched, kept on the CPU).
ITEM_ROW = "sharp_item"
PREFIX_IDS = "sharp_prefix_ids"
SUFFIX_IDS = "sharp_suffix_ids"
BLACK_PIXELS = "sharp_black_pixels"
VIDEO_FIELDS = (ITEM_ROW, PREFIX_IDS, SUFFIX_IDS, BLACK_PIXELS)
IMAGE_HASH = "sharp_image_hash"


@dataclass(frozen=True)
class ItemRow:
    """What the worker needs to know of one video, besides its pixels and text."""

    settings: dict[str, Any]  # SharpSettings.model_dump()
    mm_hash: str | None  # the key of vLLM's caches for this item (and of its report)
    content_hash: str | None  # the key of the worker's vision cache (pixels alone)
    video_tokens: int  # N: the video's visual tokens
    video_tokens_kept: int  # k: placeholders the prompt holds for them
    # Static temporal groups the tower does not embed (skip_static), ascending, and what
    # the processor measured of the video's change (core/redundancy.py; None when it
    # measured nothing): the report's `redundancy`.
    skipped_groups: list[int] = field(default_factory=list)
    redundancy: dict[str, Any] | None = None
    query_from: int = 0  # the first suffix row that is a query row
    context: list[str] = field(default_factory=list)  # cache hashes of the media before it
    # The `prior_query: generic` prior's text (prefix, suffix, query_from), or None.
    generic_prior_query: dict[str, Any] | None = None
    profiling: bool = False  # a memory-profiling dummy

    @property
    def tower_tokens(self) -> int:
        """The visual tokens the tower makes: N, less the skipped groups'."""
        if not self.skipped_groups:
            return self.video_tokens
        groups = self.redundancy["groups"]
        return self.video_tokens - len(self.skipped_groups) * (self.video_tokens // groups)

    def to_tensor(self) -> torch.Tensor:
        return json_tensor(asdict(self))

    @classmethod
    def from_tensor(cls, tensor: torch.Tensor) -> ItemRow:
        return cls(**read_json_tensor(tensor))


def json_tensor(payload: dict[str, Any]) -> torch.Tensor:
    """A JSON payload as a uint8 tensor: the one kind of value a batched field carries
    through vLLM's caches and serialisation unchanged."""
    return torch.frombuffer(bytearray(json.dumps(payload, sort_keys=True).encode()), dtype=torch.uint8)


def read_json_tensor(tensor: torch.Tensor) -> dict[str, Any]:
    return json.loads(bytes(tensor.tolist()).decode())


def image_hash_tensor(mm_hash: str | None) -> torch.Tensor:
    return json_tensor({"mm_hash": mm_hash})


def read_image_hash(tensor: torch.Tensor) -> str | None:
    return read_json_tensor(tensor)["mm_hash"]
