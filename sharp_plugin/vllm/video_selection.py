"""The selection of a call's videos, between the vision tower and the prompt: each video
is planned (its scoring layout), the scoring passes of the call's videos run together
where they can, then each video is selected (falling back to a uniform selection of the
same k if anything fails) and its report filed for the frontend."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from vllm.logger import init_logger

from sharp_plugin.core import NO_PRUNING, ScoringResult, Selection, SharpSettings, select_tokens
from sharp_plugin.core.masks import SegmentMask
from sharp_plugin.core.selection import uniform_indices
from sharp_plugin.report import KeptTokens, VideoReport

from .item_fields import PREFIX_IDS, SUFFIX_IDS, ItemRow
from .reports import WORKER_REPORTS
from .scoring_layout import ItemLayout, ItemRows
from .scoring_pass import DecoderScoringPass, ScoringItem, score_together

if TYPE_CHECKING:
    from .model import SharpModelMixin

logger = init_logger(__name__)


@dataclass
class VideoPlan:
    """One video of an embed_multimodal call, between its planning and its selection."""

    visual: torch.Tensor  # [N', D] the vision tower's output: the tokens selection chooses from
    appended: torch.Tensor | None  # [e, D] rows the family appends, never pruned (or None)
    grid: Sequence[int]
    t_scale: float
    item_positions: torch.Tensor | None  # [R, 3]; None for families with 1-D positions
    rows: ItemRows | None  # its text rows among the visual ones (Qwen3-VL), if any
    fields: dict[str, Any]  # its rows of the processor's batched fields
    row: ItemRow | None  # its item row (None: not a ShaRP item)
    settings: SharpSettings  # what selects its tokens
    # The scoring pass's settings and sequence, when one runs (for a profiling dummy,
    # the discarded profile selection's).
    scoring_settings: SharpSettings | None = None
    layout: ItemLayout | None = None
    prescored: ScoringResult | None = None  # from the packed pass, when it ran in one
    shared_scoring_ms: float = 0.0  # that packed pass's wall time
    # The original indices of `visual`'s rows when the tower skipped static groups (None:
    # every token, N' = N); the selection's indices are lifted through it.
    present: torch.Tensor | None = None
    tower_ms: float = 0.0
    failure: Exception | None = None
    # For the report: "prior", "context_missing", "scored_with".
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def profiling(self) -> bool:
        return self.row is not None and self.row.profiling

    @property
    def context(self) -> list[str]:
        """Cache hashes of the media items before this video in its prompt."""
        return self.row.context if self.row is not None else []

    def mask(self, settings: SharpSettings) -> SegmentMask:
        return settings.effective().segment_mask_for(self.visual.shape[0])

    def token_groups(self) -> torch.Tensor | None:
        """The temporal group of each of `visual`'s rows (None before a layout exists)."""
        if self.layout is None:
            return None
        indices = torch.arange(self.visual.shape[0]) if self.present is None else self.present.cpu()
        return indices // self.layout.tokens_per_group


@dataclass(frozen=True)
class _Prescored:
    """A ScoringPass that answers its video's first scoring request (its own visual
    embeddings, its mask) from the packed pass, and runs any other (the mean prior's)
    itself."""

    single: DecoderScoringPass
    visual: torch.Tensor
    mask: SegmentMask
    result: ScoringResult

    def __call__(self, visual: torch.Tensor, mask: SegmentMask) -> ScoringResult:
        if visual is self.visual and mask == self.mask:
            return self.result
        return self.single(visual, mask)


class VideoSelector:
    def __init__(self, model: SharpModelMixin):
        self.model = model

    def plan(
        self,
        visual,
        grid,
        t_scale,
        fields,
        row,
        waits_for=frozenset(),
        item_positions=None,
        rows=None,
        present=None,
        tower_ms=0.0,
    ):
        """What one video's selection needs, with its scoring layout when it has one and
        can have it now (so that the passes of a call's videos can run together). A video
        whose context includes an item in `waits_for` gets its layout when it is
        selected, after that item. A layout that cannot be built is kept as the plan's
        failure, for `select` to fall back on."""
        visual, appended = self.model.sharp_split_video_output(visual)
        plan = VideoPlan(
            visual=visual,
            appended=appended,
            grid=grid,
            t_scale=t_scale,
            item_positions=item_positions,
            rows=rows,
            fields=fields,
            row=row,
            settings=SharpSettings.model_validate(row.settings) if row is not None else NO_PRUNING,
            present=present,
            tower_ms=tower_ms,
        )
        if plan.profiling:
            plan.scoring_settings = self.model.sharp_profile.settings()
        elif plan.settings.needs_scoring_pass:
            plan.scoring_settings = plan.settings
        if plan.scoring_settings is not None and not waits_for.intersection(plan.context):
            try:
                plan.layout = self._layout(plan)
            except Exception as exc:  # reported by select(), which falls back
                plan.failure = exc
        return plan

    def _layout(self, plan: VideoPlan) -> ItemLayout:
        if plan.profiling:
            return self.model.sharp_profile.layout(plan.grid, plan.item_positions, plan.appended, plan.rows)
        return self.model.sharp_layout(
            plan.grid,
            plan.item_positions,
            plan.fields[PREFIX_IDS],
            plan.fields[SUFFIX_IDS],
            plan.row.query_from,
            context=plan.context,
            notes=plan.notes,
            appended=plan.appended,
            rows=plan.rows,
            present=plan.present,
        )

    def score_packed(self, plans: Sequence[VideoPlan]) -> None:
        """Run the scoring passes of this call's videos together, one packed pass per
        scoring layer (see `score_together`), and leave each result on its plan. A video
        alone at its layer is scored inside its own selection. If a packed pass fails,
        its videos are scored one at a time instead."""
        by_layer: dict[int, list[VideoPlan]] = {}
        for plan in plans:
            if plan.layout is not None and plan.failure is None:
                by_layer.setdefault(plan.scoring_settings.prune_layer, []).append(plan)
        longest = self.model.sharp_profile.max_video_tokens
        for prune_layer, group in by_layer.items():
            # The profile reserved one pass over the longest video: a packed pass longer
            # than that is scored one video at a time instead.
            too_long = longest and sum(p.visual.shape[0] for p in group) > longest
            if len(group) < 2 or too_long:
                continue
            started = time.perf_counter()
            try:
                results = score_together(
                    self.model.sharp_scoring_decoder(prune_layer),
                    prune_layer,
                    [ScoringItem(p.layout, p.visual, p.mask(p.scoring_settings)) for p in group],
                    self.model.sharp_tp_size,
                )
            except Exception:
                logger.exception("ShaRP: packed scoring pass failed; scoring these videos one at a time")
                continue
            elapsed_ms = (time.perf_counter() - started) * 1e3
            for plan, result in zip(group, results, strict=True):
                plan.prescored = result
                plan.notes["scored_with"] = len(group)
                plan.shared_scoring_ms = elapsed_ms

    def select(self, plan: VideoPlan, vision_cached: bool) -> torch.Tensor:
        """The video's kept rows as `embed_multimodal` returns them, its report filed."""
        row = plan.row
        if plan.profiling:
            self.model.sharp_profile.discarded_selection(self, plan)
        started = time.perf_counter()
        fallback = None
        try:
            if plan.failure is not None:
                raise plan.failure
            selection = self.run_selection(plan)
            if row is not None and selection.kept.numel() != row.video_tokens_kept:
                raise RuntimeError(
                    f"kept {selection.kept.numel()} tokens, placeholders expect {row.video_tokens_kept}"
                )
        except Exception as exc:
            # Last line of defence: an exception here would kill the engine core and
            # every request in flight. The processor validates everything a request
            # controls, so reaching this is a bug; the request still completes with a
            # safe selection of the same k tokens, and its report names the failure.
            logger.exception("ShaRP selection failed; falling back to uniform selection")
            fallback = f"{type(exc).__name__}: {exc}"[:300]
            num_tokens = plan.visual.shape[0]
            kept = uniform_indices(num_tokens, row.video_tokens_kept) if row else torch.arange(num_tokens)
            selection = Selection(kept, num_tokens, scored=False)
        # A packed pass's time is the time each of its videos waited for its scores.
        own_ms = (time.perf_counter() - started) * 1e3
        scoring_ms = plan.shared_scoring_ms + own_ms if selection.scored else 0.0
        kept_visual = plan.visual[selection.kept.to(plan.visual.device, non_blocking=True)]
        kept = selection.kept if plan.present is None else plan.present[selection.kept]
        encoded, kept_rows = self.model.sharp_item_output(
            kept_visual, plan.appended, plan.item_positions, kept, plan.rows
        )
        if row is not None and row.mm_hash:
            if not plan.profiling:
                media_rows = self.model.sharp_media_rows(encoded, plan.item_positions, kept_rows)
                self.model.sharp_media.remember(row.mm_hash, media_rows)
            try:
                report = self._report(plan, kept, selection.scored, scoring_ms, fallback, vision_cached)
                WORKER_REPORTS.put(row.mm_hash, report.model_dump())
            except Exception:  # a report is not worth the engine: the request goes on without it
                logger.exception("ShaRP: could not file the report of a selection")
        return encoded

    def run_selection(self, plan: VideoPlan, settings: SharpSettings | None = None) -> Selection:
        """select_tokens for one video; the scoring pass answers from the packed pass's
        result when there is one. `settings` overrides the plan's (the profile run)."""
        settings = plan.settings if settings is None else settings
        scoring_pass = black_prior = None
        if settings.needs_scoring_pass:
            if plan.layout is None:  # it waited for an earlier video of this call
                plan.layout = self._layout(plan)
            scoring_pass = self.model.sharp_scoring_pass(settings.prune_layer, plan.layout)
            if plan.prescored is not None:
                scoring_pass = _Prescored(scoring_pass, plan.visual, plan.mask(settings), plan.prescored)

            def black_prior(mask: SegmentMask) -> torch.Tensor:
                return self.model.sharp_prior.scores(plan, settings, mask, scoring_pass)

        return select_tokens(
            settings, plan.visual, scoring_pass, black_prior, token_groups=plan.token_groups()
        )

    def _report(
        self, plan: VideoPlan, kept: torch.Tensor, scored: bool, scoring_ms, fallback, vision_cached
    ) -> VideoReport:
        settings, row = plan.settings, plan.row
        return VideoReport(
            method=settings.method,
            retention=settings.retention,
            prune_layer=settings.prune_layer if settings.needs_scoring_pass else None,
            video_tokens=row.video_tokens,
            video_tokens_kept=int(kept.numel()),
            scoring_ms=scoring_ms,
            tower_ms=plan.tower_ms if not vision_cached else None,
            groups_skipped=len(row.skipped_groups),
            redundancy=row.redundancy,
            selection_id=uuid.uuid4().hex,
            fallback=fallback,
            prior=plan.notes.get("prior"),
            vision_cached=vision_cached,
            context_missing=plan.notes.get("context_missing", 0),
            scored_with=plan.notes.get("scored_with", 1) if scored else 0,
            selection=KeptTokens(
                token_grid=self.model.sharp_token_grid(plan.grid), kept_indices=kept.tolist()
            ),
        )
