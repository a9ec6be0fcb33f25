"""Deduplication: a greedy walk by score that skips tokens too similar to one already
kept, then fills the budget with the best skipped ones so it is always met exactly."""

from __future__ import annotations

import numpy as np
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
    # Unit vectors are made one block at a time, in walk order: no [N, D] float32 copy
    # of the features, only the kept set's k rows.
    kept_unit = features.new_empty((k, features.shape[1]), dtype=torch.float32)
    kept: list[int] = []
    skipped: list[int] = []
    # Blocks bound the device work and the device-to-host reads: one matmul against the
    # kept set and one within the block, read back in one copy, then a host-side walk
    # over a boolean adjacency (the walk is sequential by definition: a token's fate
    # depends on the ones kept before it). One read per block of 256 walked candidates.
    block = 256
    for start in range(0, n, block):
        cand = F.normalize(features[order[start : start + block]].float(), dim=-1)  # [B, D]
        size = cand.shape[0]
        similar = (cand @ cand.T) >= threshold  # [B, B]
        if kept:
            dup_of_kept = ((cand @ kept_unit[: len(kept)].T).amax(dim=1) >= threshold)[:, None]  # [B, 1]
        else:
            dup_of_kept = similar.new_zeros(size, 1)
        on_host = torch.cat([dup_of_kept, similar], dim=1).cpu().numpy()  # [B, 1 + B]
        dup_of_kept, similar = on_host[:, 0], on_host[:, 1:]
        taken = np.zeros(size, dtype=bool)
        for j in range(size):
            if dup_of_kept[j] or (similar[j] & taken).any():
                skipped.append(start + j)
                continue
            taken[j] = True
            kept.append(start + j)
            if len(kept) == k:
                break
        new_rows = np.flatnonzero(taken)
        first = len(kept) - len(new_rows)
        kept_unit[first : len(kept)] = cand[_to_device(torch.from_numpy(new_rows), cand.device)]
        if len(kept) == k:
            return order[_to_device(torch.tensor(kept), order.device)]
    fill = skipped[: k - len(kept)]  # skipped is already in descending score order
    return order[_to_device(torch.tensor(kept + fill), order.device)]


def stable_descending(scores: torch.Tensor) -> torch.Tensor:
    """Indices by descending score; ties keep the lower index first (deterministic)."""
    return torch.sort(scores.float(), descending=True, stable=True).indices


def _to_device(indices: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host indices to the device without waiting for the work queued there (a pageable
    source is staged before the call returns, so the copy is safe to not wait for)."""
    return indices.to(device, non_blocking=True)
