"""Segment-aware masking for the scoring pass.

A sequence is [prefix text | visual tokens | query text]. Text is causal. Visual tokens
of one segment (`SegmentMask.groups` consecutive temporal groups; text rows inside the
item belong to their group) see each other both ways, plus the prefix, and:
- block-causal (`local=False`): every earlier segment too, so a segment's tokens carry
  the whole video before them (the original mask; O(N^2) attention over the video);
- segment-local (`local=True`): no other segment, so each segment aggregates only its
  own local information, as the paper's phrase "local information aggregation" reads.
  Its attention is O(N * S) for segments of S tokens and can be computed one segment
  after another, which is what bounds the scoring pass on long videos.
Query rows see everything before them either way.

The mask is described by two numbers per row, which keeps it O(L) until materialised:
row i sees column c iff c <= end[i] and (c < prefix_len or c >= begin[i]).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SegmentMask:
    groups: int  # temporal groups per segment; 0: the plain causal mask
    local: bool = False  # True: a segment sees the prefix and itself only


@dataclass(frozen=True)
class Visibility:
    """Which columns each row of a sequence sees (see the module docstring)."""

    begin: torch.Tensor  # [L] long: first visible column at or after prefix_len
    end: torch.Tensor  # [L] long: last visible column
    prefix_len: int  # columns every row that reaches them sees (the prompt text before the video)

    def __len__(self) -> int:
        return self.end.numel()

    def rows(self, rows: slice) -> Visibility:
        return Visibility(self.begin[rows], self.end[rows], self.prefix_len)

    def mask(self, columns: torch.Tensor | None = None, device: torch.device | None = None) -> torch.Tensor:
        """Boolean mask of every row over `columns` (default: all L): True where the row
        may attend. # [rows, columns]"""
        cols = torch.arange(len(self), device=device) if columns is None else columns.to(device)
        begin, end = self.begin.to(device)[:, None], self.end.to(device)[:, None]
        return (cols[None, :] <= end) & ((cols[None, :] < self.prefix_len) | (cols[None, :] >= begin))


def visibility(
    prefix_len: int,
    num_visual: int,
    query_len: int,
    tokens_per_group: int,
    mask: SegmentMask | int,
    item_groups: torch.Tensor | None = None,
) -> Visibility:
    """Visible columns of every row. `mask` as an int is block-causal with that many
    groups per segment. `item_groups`: the temporal group of each of the item's rows
    (# [num_visual] long, non-decreasing), for an item whose rows are not only visual
    tokens (Qwen3-VL's timestamp text between groups: those rows belong to their group's
    segment). By default the item is `num_visual` visual tokens, `tokens_per_group` to a
    group."""
    mask = SegmentMask(mask) if isinstance(mask, int) else mask
    total = prefix_len + num_visual + query_len
    end, begin = torch.arange(total), torch.zeros(total, dtype=torch.long)
    if mask.groups > 0 and num_visual > 0:
        groups = torch.arange(num_visual) // tokens_per_group if item_groups is None else item_groups.cpu()
        segment = groups // mask.groups
        segment_last = torch.searchsorted(segment, segment, right=True) - 1  # [R]: last row of its segment
        visual = slice(prefix_len, prefix_len + num_visual)
        end[visual] = prefix_len + segment_last
        if mask.local:
            begin[visual] = prefix_len + torch.searchsorted(segment, segment, right=False)  # its first row
    return Visibility(begin, end, prefix_len)


def visibility_end(
    prefix_len: int,
    num_visual: int,
    query_len: int,
    tokens_per_group: int,
    segment_groups: int,
    item_groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """Last visible column of each row under the block-causal mask (no row skips a
    column before its end there). # [L] long"""
    return visibility(prefix_len, num_visual, query_len, tokens_per_group, segment_groups, item_groups).end


def attention_mask(
    end: torch.Tensor, num_cols: int | None = None, device: torch.device | None = None
) -> torch.Tensor:
    """Boolean mask for scaled_dot_product_attention: True where a row may attend.

    `end` holds the rows' last visible columns (a slice of `visibility_end` for a block
    of rows: causal style, no column skipped); `num_cols` defaults to one column per row
    of the whole sequence. # [rows, num_cols] bool: one matrix shared by all heads.
    """
    num_cols = end.numel() if num_cols is None else num_cols
    seen = Visibility(torch.zeros_like(end), end, prefix_len=0)
    return seen.mask(torch.arange(num_cols, device=device), device)
