"""Attention of the query rows over the visual tokens, at the scoring layer.

Only the query rows are materialised: [H, Q, L] probabilities, never an [L, L] matrix
per head. Heads are summed rather than averaged so that a tensor-parallel caller can
all-reduce the sums over ranks before dividing by the total head count.
"""

from __future__ import annotations

import torch


def query_attention_sums(
    q_rows: torch.Tensor,  # [H, Q, D] queries of the query-text rows (after RoPE)
    keys: torch.Tensor,  # [H_kv, L, D] keys of the whole sequence (after RoPE)
    row_positions: torch.Tensor,  # [Q] sequence index of each query row (for causality)
    scale: float,
) -> torch.Tensor:
    """Sum over heads and query rows of softmax attention probabilities. # [L] float32

    Grouped-query attention is handled by viewing the query heads as
    [H_kv, H/H_kv, Q, D] instead of repeating the keys.
    """
    num_heads, num_rows, head_dim = q_rows.shape
    num_kv_heads, seq_len, _ = keys.shape
    group = num_heads // num_kv_heads
    q = q_rows.float().view(num_kv_heads, group * num_rows, head_dim)
    logits = torch.bmm(q, keys.float().transpose(1, 2)) * scale  # [H_kv, G*Q, L]
    logits = logits.view(num_kv_heads, group, num_rows, seq_len)
    cols = torch.arange(seq_len, device=keys.device)
    future = cols[None, :] > row_positions.to(keys.device)[:, None]  # [Q, L]
    logits = logits.masked_fill(future, float("-inf"))
    return logits.softmax(dim=-1).sum(dim=(0, 1, 2))  # [L]


def mean_visual_scores(
    sums: torch.Tensor,  # [L] from query_attention_sums (all-reduced if sharded)
    total_heads: int,
    num_rows: int,
    visual_start: int,
    num_visual: int,
) -> torch.Tensor:
    """Average over heads and query rows, restricted to the visual columns. # [N]"""
    return sums[visual_start : visual_start + num_visual] / (total_heads * num_rows)
