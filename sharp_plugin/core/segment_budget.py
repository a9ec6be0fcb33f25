"""Spreading the budget over the video's segments (the `budget_spread` switch).

`global`: one top-k over the whole video, as the method defines it. On a long video the
query's attention is uneven across segments, so a segment whose needle scores below
another segment's background loses its needle (bench/results/long_video.md: recall 0.55
at 64 clips where the oracle keeps it every time).

`segments`: each segment (`segment_frames` temporal groups, as the mask cuts them) keeps
its share of the budget, k times its share of the tokens, chosen by score (and
deduplicated) within it. No segment can be starved; the scores still decide which of a
segment's tokens matter. A segment is the unit here because it is the unit the mask
already scores alone.
"""

from __future__ import annotations

import torch

from .dedup import deduplicated_top_k, stable_descending


def segment_quotas(sizes: torch.Tensor, k: int) -> torch.Tensor:
    """Each segment's share of k, proportional to its size, rounded by largest remainder
    (ties to the earlier segment). Sums to k; never above a segment's size. # [S] long"""
    exact = sizes.double() * k / sizes.sum()
    quotas = exact.floor().long()
    remainder = k - int(quotas.sum())
    quotas[stable_descending(exact - quotas)[:remainder]] += 1
    return quotas


def top_k_per_segment(
    scores: torch.Tensor,  # [N]
    features: torch.Tensor,  # [N, D] for dedup
    segments: torch.Tensor,  # [N] long, non-decreasing: each token's segment
    k: int,
    threshold: float,
) -> torch.Tensor:
    """k indices, each segment's quota of its best (deduplicated) tokens. # [k] long, by segment"""
    _, sizes = torch.unique_consecutive(segments.cpu(), return_counts=True)
    chosen, start = [], 0
    for size, quota in zip(sizes.tolist(), segment_quotas(sizes, k).tolist(), strict=True):
        if quota:
            part = slice(start, start + size)
            chosen.append(deduplicated_top_k(scores[part], features[part], quota, threshold).cpu() + start)
        start += size
    return torch.cat(chosen)
