"""Deduplication: a greedy walk by score that skips tokens too similar to one already
kept, then fills the budget with the best skipped ones so it is always met exactly."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def deduplicated_top_k(
    scores: torch.Tensor,  # [N]
    features: torch.Tensor,  # [N, D] hidden states entering the scoring layer
    k: int,
    threshold: float,
) -> torch.Tensor:
    """Indices of k tokens, highest score first among non-duplicates. # [k] long

    A token is a duplicate when its cosine similarity with any already kept token is
    >= threshold. threshold >= 1.0 degenerates to plain top-k.
    """
    n = scores.numel()
    order = stable_descending(scores)
    if threshold >= 1.0 or k >= n:
        return order[:k]
    unit = F.normalize(features.float(), dim=-1)[order]  # [N, D], in walk order
    kept_unit = unit.new_empty((k, unit.shape[1]))
    kept: list[int] = []
    skipped: list[int] = []
    # Blocks bound the number of device syncs: similarities of a block against the kept
    # set and within the block come from two matmuls and one copy to the host; only the
    # walk inside the block is sequential.
    block = 256
    for start in range(0, n, block):
        cand = unit[start : start + block]  # [B, D]
        if kept:
            max_to_kept = (cand @ kept_unit[: len(kept)].T).amax(dim=1).cpu()  # [B]
        else:
            max_to_kept = torch.full((cand.shape[0],), -1.0)
        within = (cand @ cand.T).cpu()  # [B, B]
        taken_in_block: list[int] = []
        for j in range(cand.shape[0]):
            dup = bool(max_to_kept[j] >= threshold) or (
                bool(taken_in_block) and bool(within[j, taken_in_block].max() >= threshold)
            )
            if dup:
                skipped.append(start + j)
                continue
            taken_in_block.append(j)
            kept_unit[len(kept)] = cand[j]
            kept.append(start + j)
            if len(kept) == k:
                return order[torch.tensor(kept, device=order.device)]
    fill = skipped[: k - len(kept)]  # skipped is already in descending score order
    return order[torch.tensor(kept + fill, device=order.device)]


def stable_descending(scores: torch.Tensor) -> torch.Tensor:
    """Indices by descending score; ties keep the lower index first (deterministic)."""
    return torch.sort(scores.float(), descending=True, stable=True).indices
