"""The black-video prior (`debias: black`): the scores an all-black video of the same
layout gets from the same query, which carry the positional bias and no content. It
depends only on what its cache key holds, so it is computed once per key."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from sharp_plugin.core import SharpSettings
from sharp_plugin.core.masks import SegmentMask
from sharp_plugin.core.policy import ScoringPass

from .bounded_store import BoundedStore, nested_tensor_bytes
from .item_fields import BLACK_PIXELS

if TYPE_CHECKING:
    from .model import SharpModelMixin
    from .video_selection import VideoPlan

# Device caches, small next to the KV cache: 64 priors of N float32 scores each, and
# black-frame embeddings of one temporal group per grid size, at most 64 MiB in all.
_PRIOR_CACHE_ENTRIES = 64
_BLACK_EMBED_CACHE_BYTES = 64 << 20


class BlackPrior:
    def __init__(self, model: SharpModelMixin):
        self.model = model
        self.priors: BoundedStore[torch.Tensor] = BoundedStore(_PRIOR_CACHE_ENTRIES)
        self.black_groups: BoundedStore[torch.Tensor] = BoundedStore(
            max_bytes=_BLACK_EMBED_CACHE_BYTES, size_of=nested_tensor_bytes
        )

    def scores(
        self, plan: VideoPlan, settings: SharpSettings, mask: SegmentMask, scoring_pass: ScoringPass
    ) -> torch.Tensor:
        """The prior's scores for one video # [N], noting on the plan whether they came
        from the cache. The query is the request's own prompt text or, with
        `prior_query: generic`, the processor's fixed generic chat. A profiling dummy
        computes one and caches nothing (the memory of computing it is what counts)."""
        if plan.profiling:
            return scoring_pass(self.embedding(plan.grid, plan.fields[BLACK_PIXELS]), mask).scores
        # The prior covers the tokens the video's own pass scores: those of the groups
        # the tower embedded (all groups of a black video embed alike).
        skipped = tuple(plan.row.skipped_groups)
        grid = [int(plan.grid[0]) - len(skipped), *plan.grid[1:]]
        generic = plan.row.generic_prior_query
        if generic is not None:
            prefix, suffix, query_from = generic["prefix"], generic["suffix"], generic["query_from"]
        else:  # the request's own text, and the earlier media its layout holds
            prefix, suffix = plan.layout.prefix_ids.tolist(), plan.layout.suffix_ids.tolist()
            query_from = plan.layout.query_from
        key = (
            tuple(plan.context) if generic is None else (),
            tuple(plan.grid),
            skipped,
            plan.t_scale,
            settings.prune_layer,
            mask,
            query_from,
            tuple(prefix),
            tuple(suffix),
        )
        prior = self.priors.get(key)
        plan.notes["prior"] = "computed" if prior is None else "cached"
        if prior is not None:
            return prior
        if generic is not None:  # the generic layout is built only when the prior is computed
            layout = self.model.sharp_layout(
                plan.grid,
                plan.item_positions,
                torch.tensor(prefix, dtype=torch.long),
                torch.tensor(suffix, dtype=torch.long),
                query_from,
                appended=plan.appended,
                rows=plan.rows,
                present=plan.present,
            )
            scoring_pass = self.model.sharp_scoring_pass(settings.prune_layer, layout)
        black = self.embedding(grid, plan.fields[BLACK_PIXELS])
        prior = scoring_pass(black, mask).scores
        self.priors.put(key, prior)
        return prior

    def embedding(self, grid, black_row: torch.Tensor) -> torch.Tensor:
        """The vision tower's embedding of an all-black video of this grid. # [N, D]

        Every family's tower attends within one temporal group at a time and gives it
        no temporal position, so all groups of a black video embed alike: one group is
        embedded (and cached by its size) and tiled over the T groups."""
        groups, height, width = (int(x) for x in grid)
        one_group = self.black_groups.get((height, width))
        if one_group is None:
            one_group = self.model.sharp_embed_black_video((1, height, width), black_row)
            self.black_groups.put((height, width), one_group)
        return one_group.repeat(groups, 1)
