"""Segment-aware causal masking for the scoring pass.

A sequence is [prefix text | visual tokens | query text]. Text is causal. Visual tokens
of one segment (`segment_groups` consecutive temporal groups) see each other both ways,
plus everything before their segment (block-causal). The mask is described by one
number per row, the last column that row may see, which keeps it O(L) until
materialised.
"""

from __future__ import annotations

import torch


def visibility_end(
    prefix_len: int, num_visual: int, query_len: int, tokens_per_group: int, segment_groups: int
) -> torch.Tensor:
    """Last visible column for each row of the sequence. # [L] long

    segment_groups == 0 gives the plain causal mask (end[i] == i).
    """
    total = prefix_len + num_visual + query_len
    end = torch.arange(total)
    if segment_groups > 0 and num_visual > 0:
        segment_len = segment_groups * tokens_per_group
        local = torch.arange(num_visual)
        segment_last = (local // segment_len + 1) * segment_len - 1  # [N]
        end[prefix_len : prefix_len + num_visual] = prefix_len + segment_last.clamp(max=num_visual - 1)
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
