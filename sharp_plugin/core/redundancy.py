"""How much a video repeats itself, measured on its pixels before the vision tower: which
temporal groups are static (`skip_static`), and a budget from the video's new content
(`retention: "auto"`).

The unit is the language model's: one visual token (a merged patch of one temporal
group). Each token is summarised by the mean colour of each of its parts (its 2 x 2
patches: [G, T, parts, C], on the 0..1 scale) over its group's frames, so that sensor
noise and compression error, which are independent from pixel to pixel, average out
(on a 14 x 14 x 2 patch a pixel noise of 14 grey levels moves the mean by about
0.003), while a change inside the token (text on a slide, a small object) still moves
one part's mean. A token has changed when one of its parts' channel means moved by
more than the threshold (`change_threshold`), raised to a multiple of the video's own
noise floor when the video is noisier than that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .budget import kept_count
from .settings import SharpSettings

# The threshold follows the video's noise floor up to this many times the floor...
NOISE_MULTIPLE = 4.0
# ...and never past this multiple of the configured threshold: a video in motion
# everywhere has a high "floor", and must not thereby make real changes look static.
MAX_THRESHOLD_RAISE = 2.0


@dataclass(frozen=True)
class VideoChange:
    """What the pixels say about one video's redundancy."""

    threshold: float  # the change a token had to exceed to count as changed
    noise_floor: float  # the median token change of the video's quietest group transition
    groups: int  # G
    tokens_per_group: int  # T
    skipped_groups: tuple[int, ...]  # static groups, never handed to the tower (ascending)
    # Per group, its tokens that changed from the group before (group 0: all of them).
    changed_per_group: tuple[int, ...]

    @property
    def new_tokens(self) -> int:
        """Group 0's tokens, and each later token that changed from its group before."""
        return sum(self.changed_per_group)

    @property
    def num_tokens(self) -> int:
        return self.groups * self.tokens_per_group

    @property
    def novelty(self) -> float:
        """The share of the video's tokens that show something new. # in (0, 1]"""
        return self.new_tokens / self.num_tokens

    @property
    def present_tokens(self) -> int:
        """Tokens of the groups the tower embeds."""
        return (self.groups - len(self.skipped_groups)) * self.tokens_per_group


def measure_change(
    token_means: torch.Tensor,  # [G, T, parts, C] each token's parts' mean colours, 0..1
    threshold: float,
    *,
    skip_static: bool,
    keep_groups: Sequence[int] = (),
) -> VideoChange:
    """The video's change, and which groups are static when `skip_static`: a group is
    static when none of its tokens changed from the last group kept before it (not the
    one just before it, so a slow drift still ends a static run). The first group is
    always kept, and so is every group in `keep_groups`."""
    groups, tokens_per_group = token_means.shape[:2]
    means = token_means.float().flatten(2)  # [G, T, parts * C]
    step = _token_change(means[1:], means[:-1])  # [G - 1, T]: each group against the one before
    noise_floor = float(step.median(dim=1).values.min()) if groups > 1 else 0.0
    threshold = max(threshold, min(NOISE_MULTIPLE * noise_floor, MAX_THRESHOLD_RAISE * threshold))
    changed_per_group = (tokens_per_group, *(step > threshold).sum(dim=1).tolist())
    skipped: list[int] = []
    if skip_static:
        keep = set(keep_groups)
        reference = means[0]
        for group in range(1, groups):
            changed = bool((_token_change(means[group], reference) > threshold).any())
            if changed or group in keep:
                reference = means[group]
            else:
                skipped.append(group)
    return VideoChange(threshold, noise_floor, groups, tokens_per_group, tuple(skipped), changed_per_group)


def _token_change(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """How far each token moved: its parts' largest channel difference. # [..., T]"""
    return (a - b).abs().amax(dim=-1)


def auto_kept_count(change: VideoChange, min_retention: float, max_retention: float) -> int:
    """`retention: "auto"`: a video whose every token is new keeps `max_retention` of its
    tokens; one that repeats itself keeps that share of its new tokens only, and never
    less than `min_retention` of all of them. Never more than the tower embeds."""
    tokens = change.num_tokens
    wanted = round(max_retention * change.new_tokens)
    k = min(max(wanted, kept_count(min_retention, tokens)), kept_count(max_retention, tokens))
    return max(1, min(k, change.present_tokens))


def present_groups(groups: int, skipped_groups: Sequence[int]) -> torch.Tensor:
    """The groups the tower embeds, ascending. # [G'] long"""
    skipped = torch.zeros(groups, dtype=torch.bool)
    skipped[list(skipped_groups)] = True
    return (~skipped).nonzero().flatten()


def present_token_indices(groups: int, tokens_per_group: int, skipped_groups: Sequence[int]) -> torch.Tensor:
    """The original indices (t, h, w order) of the tokens of the groups not skipped. # [N'] long"""
    kept = present_groups(groups, skipped_groups)
    return (kept[:, None] * tokens_per_group + torch.arange(tokens_per_group)).flatten()


def video_budget(
    settings: SharpSettings, num_tokens: int, change: VideoChange | None
) -> tuple[SharpSettings, int]:
    """(the settings one video is selected with, the tokens its prompt keeps). The
    selection chooses among the tokens of the groups the tower embeds; `auto` resolves
    to the retention that keeps `auto_kept_count` of them, so that the worker selects
    exactly the count the placeholders hold."""
    present = change.present_tokens if change is not None else num_tokens
    if not settings.prunes:
        return settings, present
    if settings.retention == "auto":
        if change is None:
            raise ValueError("retention 'auto' needs the video's change measured")
        kept = auto_kept_count(change, settings.min_retention, settings.max_retention)
        return settings.model_copy(update={"retention": kept / present}), kept
    return settings, kept_count(settings.retention, present)
