"""Segment-aware causal masking for the scoring pass.

A sequence is [prefix text | visual tokens | query text]. Text is causal. Visual tokens
of one segment (`segment_groups` consecutive temporal groups; text rows inside the item
belong to their group) see each other both ways,
plus everything before their segment (block-causal). The mask is described by one
number per row, the last column that row may see, which keeps it O(L) until
materialised.
"""

from __future__ import annotations

import torch


def visibility_end(
    prefix_len: int,
    num_visual: int,
    query_len: int,
    tokens_per_group: int,
    segment_groups: int,
    item_groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """Last visible column for each row of the sequence. # [L] long

    segment_groups == 0 gives the plain causal mask (end[i] == i). `item_groups`: the
    temporal group of each of the item's rows (# [num_visual] long, non-decreasing),
    for an item whose rows are not only visual tokens (Qwen3-VL's timestamp text
    between groups: those rows belong to their group's segment). By default the item
    is `num_visual` visual tokens, `tokens_per_group` to a group.
    """
    total = prefix_len + num_visual + query_len
    end = torch.arange(total)
    if segment_groups > 0 and num_visual > 0:
        groups = torch.arange(num_visual) // tokens_per_group if item_groups is None else item_groups.cpu()
        segment = groups // segment_groups
        segment_last = torch.searchsorted(segment, segment, right=True) - 1  # [R]: last row of its segment
        end[prefix_len : prefix_len + num_visual] = prefix_len + segment_last
    return end


def attention_mask(
    end: torch.Tensor, num_cols: int | None = None, device: torch.device | None = None
) -> torch.Tensor:
    """Boolean mask for scaled_dot_product_attention: True where a row may attend.

    `end` holds the rows' last visible columns (a slice of `visibility_end` for a block
    of rows); `num_cols` defaults to one column per row of the whole sequence.
    # [rows, num_cols] bool: one matrix shared by all heads (never one per head).
    """
    num_cols = end.numel() if num_cols is None else num_cols
    end = end.to(device)
    cols = torch.arange(num_cols, device=device)
    return cols[None, :] <= end[:, None]
