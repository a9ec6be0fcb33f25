"""Positional-bias calibration: remove what the scoring layer attends to regardless of
content. The prior is the same score computed on a content-agnostic video with the same
layout, positions and query."""

from __future__ import annotations

import torch

from .settings import Calibration

_EPS = 1e-6


def mean_prior_embeddings(visual: torch.Tensor) -> torch.Tensor:
    """Every visual token replaced by the video's mean embedding. # [N, D] -> [N, D]

    A broadcast view of one row: the scoring pass copies its input into its own
    sequence anyway, so a materialised [N, D] would only add a copy to its peak."""
    return visual.mean(dim=0, keepdim=True).expand_as(visual)


def calibrate(
    raw: torch.Tensor,  # [N] raw scores
    prior: torch.Tensor,  # [N] scores of the content-agnostic video
    mode: Calibration,
    lam: float,
) -> torch.Tensor:
    """raw - lam * prior, or raw / (prior + eps). # [N]"""
    raw, prior = raw.float(), prior.float()
    if mode == "subtract":
        return raw - lam * prior
    return raw / (prior + _EPS)
