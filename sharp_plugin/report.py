"""One video's compression report: the one type for it, written by the worker where the
selection runs, read back by the frontend, and the base of the server's API schema
(server/schemas.py), with the same field names all the way. No vLLM here: the server
imports it to build its OpenAPI spec."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class KeptTokens(BaseModel):
    """Which of a video's visual tokens the prompt kept. Token i sits at (group, row,
    column) = unravel(i, token_grid): row-major over the grid, vLLM's t, h, w order."""

    token_grid: tuple[int, int, int]
    kept_indices: list[int]


class Redundancy(BaseModel):
    """What the processor measured of a video's change before its tower ran
    (`skip_static`, `retention: "auto"`; sharp_plugin/core/redundancy.py)."""

    groups: int  # temporal groups
    skipped_groups: list[int]  # static groups the tower did not embed
    novelty: float  # the share of its tokens that show something new
    new_tokens: int  # the first group's tokens, and each later token that changed
    changed_per_group: list[int]  # per group, its tokens that changed from the group before
    threshold: float  # the change a token had to exceed (0..1 colour), after the noise floor
    noise_floor: float  # the median token change of the video's quietest group transition
    # For `retention: "auto"`: the bounds the chosen retention was held to.
    retention_bounds: tuple[float, float] | None = None


class VideoReport(BaseModel):
    """What one video's selection did. Every field but the settings' is None when the
    worker no longer holds the selection (its store is bounded)."""

    method: str
    # The share of the tokens the selection chose from that it kept (for `auto`, the one
    # chosen for this video; None when the worker no longer holds it).
    retention: float | None
    prune_layer: int | None  # None when no scoring pass runs for the method
    video_tokens: int | None = None  # N: the visual tokens the vision tower made
    video_tokens_kept: int | None = None  # k: those the prompt holds
    scoring_ms: float | None = None  # the selection's time (its share of a packed pass included)
    # The wall time of the vision-tower call that embedded it (shared by the videos of one
    # call); None when its output came from the content cache.
    tower_ms: float | None = None
    groups_skipped: int | None = None  # static temporal groups the tower did not embed
    redundancy: Redundancy | None = None
    # Unique per selection run: the frontend tells a fresh selection from an encoder-cache
    # hit (which runs none and answers with the stored report) by whether it saw this id.
    selection_id: str | None = None
    # None, or why the selection fell back to uniform (a failure inside the worker).
    fallback: str | None = None
    # The black-frame prior: None (not used), "computed" (this selection paid a second
    # scoring pass) or "cached" (shared with earlier selections: see `prior_query`).
    prior: Literal["computed", "cached"] | None = None
    # The vision tower's output came from the worker's content cache (a known video asked
    # about again): the tower did not run.
    vision_cached: bool | None = None
    # Media items before the video that its scoring pass left out: the worker no longer
    # held them (docs/method.md, "Earlier media").
    context_missing: int | None = None
    # How many videos' scoring passes ran as one packed pass with this one (1: alone; 0:
    # no scoring pass ran).
    scored_with: int | None = None
    selection: KeptTokens | None = None
