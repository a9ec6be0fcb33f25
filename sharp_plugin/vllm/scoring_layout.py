"""The scoring pass's sequence for one video: [prefix | item rows | suffix], built from the
prompt ids the processor sent and the media items before the video that this worker
still holds, at the positions the real prompt gives them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .bounded_store import BoundedStore, nested_tensor_bytes

# What each recent media item contributed to its prompt, by cache hash: a later video's
# scoring pass puts the media before it in its context.
_MEDIA_CONTEXT_BYTES = 128 << 20


@dataclass(frozen=True)
class ItemRows:
    """An item whose prompt rows interleave text with its visual tokens (Qwen3-VL: each
    temporal group after its timestamp text, between vision-start and vision-end). The
    text rows are never pruned; in the scoring pass they belong to their group's segment."""

    visual_rows: torch.Tensor  # [N] long: the row of each visual token within the item's R rows
    text_rows: torch.Tensor  # [R - N] long: the other rows
    text_ids: torch.Tensor  # [R - N] long: their token ids
    groups: torch.Tensor  # [R] long: each row's temporal group (non-decreasing)

    @property
    def num_rows(self) -> int:
        return self.visual_rows.numel() + self.text_rows.numel()


@dataclass(frozen=True)
class ItemLayout:
    prefix_ids: torch.Tensor  # [P] long: prompt text before the video
    suffix_ids: torch.Tensor  # [S] long: prompt text after the video
    query_from: int  # first suffix row that is a query row (skips <|vision_end|>)
    positions: torch.Tensor  # [3, P + R + S] long: the real prompt's M-RoPE positions ([P + R + S]: 1-D)
    tokens_per_group: int  # visual tokens per temporal group (H * W after merging)
    # Earlier media items in the prefix: (row of prefix_ids holding the item's slot token,
    # its embeddings [m, D]); each slot row is replaced by those rows. `positions` counts
    # the replaced rows.
    prefix_media: tuple[tuple[int, torch.Tensor], ...] = ()
    # Rows the family appends after the visual tokens, never pruned and never query rows
    # (LLaVA-OneVision's newline embedding) # [e, D], or None. They open the suffix.
    appended_rows: torch.Tensor | None = None
    # The item's rows when they are not only its visual tokens (R = N otherwise).
    item_rows: ItemRows | None = None


@dataclass(frozen=True)
class MediaRows:
    """What one media item put in its prompt, for the scoring pass of a later video."""

    rows: torch.Tensor  # [m, D] the embeddings of its prompt rows (kept rows, text rows)
    positions: torch.Tensor  # [m, 3] long: each row's position, from the item's first one
    next_offset: int  # where the text after the item starts, from the item's first position


def present_rows(
    present: torch.Tensor, tokens_per_group: int, rows: ItemRows | None
) -> tuple[torch.Tensor, ItemRows]:
    """(the item's rows that stay, as indices of its R rows; the reduced item): the visual
    tokens `present` (original indices, ascending) and, when the item has text rows
    among them, the text rows of their groups. The reduced item's `groups` are the
    original ones, so segments keep their place in time."""
    if rows is None:
        empty = torch.empty(0, dtype=torch.long)
        return present, ItemRows(
            visual_rows=torch.arange(present.numel()),
            text_rows=empty,
            text_ids=empty,
            groups=present // tokens_per_group,
        )
    visual = rows.visual_rows[present]
    text_stays = torch.isin(rows.groups[rows.text_rows], torch.unique(present // tokens_per_group))
    text = rows.text_rows[text_stays]
    kept = torch.cat([text, visual]).sort().values
    return kept, ItemRows(
        visual_rows=torch.searchsorted(kept, visual),
        text_rows=torch.searchsorted(kept, text),
        text_ids=rows.text_ids[text_stays],
        groups=rows.groups[kept],
    )


class MediaContext:
    """Recent media items' rows, by cache hash, bounded in bytes."""

    def __init__(self, max_bytes: int = _MEDIA_CONTEXT_BYTES):
        self._store: BoundedStore[MediaRows] = BoundedStore(
            max_bytes=max_bytes, size_of=lambda entry: nested_tensor_bytes(entry.rows)
        )

    def remember(self, mm_hash: str | None, rows: MediaRows) -> None:
        if mm_hash:
            self._store.put(mm_hash, rows)

    def get(self, mm_hash: str | None) -> MediaRows | None:
        return self._store.get(mm_hash) if mm_hash else None


# (prefix positions # [3, P], the item's row positions # [R, 3] or None, R, rows after the
# item) -> the sequence's positions # [3, L] or [L]: the family's position scheme.
SequencePositions = Callable[[torch.Tensor, "torch.Tensor | None", int, int], torch.Tensor]


def build_layout(
    *,
    prefix_ids: torch.Tensor,
    suffix_ids: torch.Tensor,
    query_from: int,
    media_token_ids: Sequence[int],
    media: MediaContext,
    context: Sequence[str],
    tokens_per_group: int,
    num_item_rows: int,
    item_positions: torch.Tensor | None,
    sequence_positions: SequencePositions,
    appended_rows: torch.Tensor | None = None,
    item_rows: ItemRows | None = None,
    present: torch.Tensor | None = None,
    notes: dict[str, Any] | None = None,
) -> ItemLayout:
    """The scoring pass's sequence for one video. Each media slot in the prefix (one
    placeholder token per earlier item, see query_rows.split_prompt) becomes what that
    item put in the prompt, at its prompt positions, when `media` still holds it (its
    cache hash is the next of `context`); a slot it no longer holds is left out and
    counted in `notes["context_missing"]`. `present`: the original indices of the
    visual tokens the tower embedded, when it skipped static groups; the item is then
    those tokens (and the text rows of their groups) at their own positions."""
    hashes = iter(context)
    ids: list[int] = []
    prefix_media: list[tuple[int, torch.Tensor]] = []
    columns: list[torch.Tensor] = []
    next_position, text_run, missing = 0, 0, 0
    for token in prefix_ids.tolist():
        if token not in media_token_ids:
            ids.append(token)
            text_run += 1
            continue
        columns.append(torch.arange(next_position, next_position + text_run).expand(3, -1))
        next_position, text_run = next_position + text_run, 0
        stored = media.get(next(hashes, None))
        if stored is None:
            missing += 1
            continue
        prefix_media.append((len(ids), stored.rows))
        ids.append(token)
        columns.append(stored.positions.T + next_position)
        next_position += stored.next_offset
    columns.append(torch.arange(next_position, next_position + text_run).expand(3, -1))
    if notes is not None:
        notes["context_missing"] = missing
    num_appended = 0 if appended_rows is None else appended_rows.shape[0]
    prefix_positions = torch.cat(columns, dim=1)
    num_after = num_appended + len(suffix_ids)
    positions = sequence_positions(prefix_positions, item_positions, num_item_rows, num_after)
    if present is not None:
        num_prefix = prefix_positions.shape[1]
        num_rows = positions.shape[-1] - num_prefix - num_after  # the whole item's rows
        kept_rows, item_rows = present_rows(present, tokens_per_group, item_rows)
        columns_kept = torch.cat(
            [
                torch.arange(num_prefix),
                num_prefix + kept_rows,
                torch.arange(num_after) + num_prefix + num_rows,
            ]
        )
        positions = positions[..., columns_kept]
    return ItemLayout(
        prefix_ids=torch.tensor(ids, dtype=torch.long),
        suffix_ids=suffix_ids,
        query_from=query_from,
        positions=positions,
        tokens_per_group=tokens_per_group,
        prefix_media=tuple(prefix_media),
        appended_rows=appended_rows,
        item_rows=item_rows,
    )
