"""The whole selection rule for one video: budget, scoring pass, prior and calibration,
deduplication, selection. Model-specific work (running the decoder layers, embedding
black frames) comes in through the ScoringPass protocol, so this file knows no model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from .budget import kept_count
from .calibration import calibrate, mean_prior_embeddings
from .dedup import deduplicated_top_k
from .masks import SegmentMask
from .segment_budget import top_k_per_segment
from .selection import in_original_order, oracle_indices, random_indices, uniform_indices
from .settings import SharpSettings


@dataclass(frozen=True)
class ScoringResult:
    scores: torch.Tensor  # [N] query attention per visual token, mean over heads and rows
    hidden: torch.Tensor  # [N, D] hidden states of the visual tokens entering layer K


class ScoringPass(Protocol):
    def __call__(self, visual: torch.Tensor, mask: SegmentMask) -> ScoringResult:
        """Run layers [0, K) over [prefix, visual, query] and score at layer K."""
        ...


# Prior scores on the all-black video's embeddings: (mask) -> [N].
# The caller owns it so that it can cache by layout and query.
BlackPrior = Callable[[SegmentMask], torch.Tensor]


@dataclass(frozen=True)
class Selection:
    kept: torch.Tensor  # [k] long, ascending
    num_tokens: int
    scored: bool  # whether the scoring pass ran


def select_tokens(
    settings: SharpSettings,
    visual: torch.Tensor,  # [N, D] visual embeddings of one video
    scoring_pass: ScoringPass | None = None,
    black_prior: BlackPrior | None = None,
    token_groups: torch.Tensor | None = None,  # [N] long: each token's temporal group
) -> Selection:
    s = settings.effective()
    n = visual.shape[0]
    if not s.prunes:
        return Selection(torch.arange(n), n, scored=False)
    k = kept_count(s.retention, n)
    if s.method == "uniform":
        return Selection(uniform_indices(n, k), n, scored=False)
    if s.method == "random":
        return Selection(random_indices(n, k, s.seed), n, scored=False)
    if s.method == "oracle":
        return Selection(oracle_indices(n, k, s.oracle_tokens), n, scored=False)
    if scoring_pass is None:
        raise ValueError(f"method {s.method!r} needs a scoring pass")

    mask = s.segment_mask_for(n)
    # The prior first: its pass then holds nothing of the video's own pass, whose hidden
    # states ([N, D], for dedup) would otherwise stay alive through it.
    prior = None
    if s.debias == "mean":
        prior = scoring_pass(mean_prior_embeddings(visual), mask).scores
    elif s.debias != "off":
        if black_prior is None:
            raise ValueError("debias 'black' needs a black-frame prior")
        prior = black_prior(mask)
    result = scoring_pass(visual, mask)
    scores = result.scores if prior is None else calibrate(result.scores, prior, s.calibration, s.lam)
    if s.budget_spread == "segments" and s.segment_frames > 0:
        if token_groups is None:
            raise ValueError("budget_spread 'segments' needs each token's temporal group")
        segments = token_groups // s.segment_frames
        chosen = top_k_per_segment(scores, result.hidden, segments, k, s.dedup_threshold)
    else:
        chosen = deduplicated_top_k(scores, result.hidden, k, s.dedup_threshold)
    return Selection(in_original_order(chosen.cpu()), n, scored=True)
