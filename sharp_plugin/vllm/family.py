"""What a model family provides to the plugin: every hook, in one place.

A family is a stock vLLM model class and its multimodal processor. Its ShaRP classes mix
`SharpModelMixin` (model.py) and `SharpProcessorMixin` (processor.py) in before the stock
classes and implement every hook below; shared code calls the hooks and never asks which
family it runs. The families differ in three ways:
- positions: M-RoPE with the kept tokens at their original (t, h, w) positions (Qwen-VL),
  or 1-D, where the kept tokens take consecutive positions (LLaVA-OneVision);
- the rows a video puts in the prompt besides its visual tokens, never pruned (Qwen3-VL's
  timestamp text between groups, LLaVA-OneVision's newline after the video);
- how the vision tower is read and run (grids, chunks, black frames).
Instances are checked for completeness when vLLM builds them (abc), and
tests/plugin/test_register.py checks every registered class without building one.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import torch

from .scoring_layout import ItemRows, MediaRows

# A video's grid as the family reports it: Qwen-VL its `video_grid_thw` row (unmerged
# patches), LLaVA-OneVision frames x pooled rows x pooled columns.
Grid = Sequence[int]


class SharpModelFamily(abc.ABC):
    """The model side: the worker, inside `embed_multimodal`."""

    # ---- reading the model and its inputs ----------------------------------------------
    @abc.abstractmethod
    def sharp_decoder(self) -> torch.nn.Module:
        """The decoder stack whose first layers the scoring pass runs (has `.layers` and
        `.embed_input_ids`)."""

    @abc.abstractmethod
    def sharp_video_grids(self, video_input) -> list[list[int]]:
        """Each video's grid, in the order of the family's parsed video input."""

    @abc.abstractmethod
    def sharp_token_grid(self, grid: Grid) -> tuple[int, int, int]:
        """(temporal groups, rows, columns) of a video's visual tokens: kept indices are
        row-major over this grid (vLLM's t, h, w order), and a temporal group is the unit
        of segment-aware masking."""

    @abc.abstractmethod
    def sharp_video_t_scale(self, video_input, index: int) -> float:
        """M-RoPE time steps per temporal group of the `index`-th video (1.0 where time is
        not a position: 1-D families, and Qwen3-VL, whose timestamps are text)."""

    @abc.abstractmethod
    def sharp_video_subset(self, video_input, indices: Sequence[int]):
        """The same kind of video input, holding only the videos at `indices`."""

    @abc.abstractmethod
    def sharp_video_groups(self, video_input, index: int, groups: Sequence[int]):
        """The same kind of video input, holding the `index`-th video's temporal groups
        `groups` (ascending) only: what the tower embeds when static groups are skipped.
        Exact for every group it holds, since every family's tower attends within a
        group and gives it no temporal position."""

    # ---- the vision tower ----------------------------------------------------------------
    @abc.abstractmethod
    def sharp_embed_videos(self, video_input) -> list[torch.Tensor]:
        """The vision tower's output for each video of `video_input`, the tower run on at
        most `self.sharp_tower.chunk_patches` input patches at a time (0: no bound), so
        its activations stay bounded however long a video is. Exact: every family's
        tower attends within one temporal group (or frame) at a time."""

    @abc.abstractmethod
    def sharp_split_video_output(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One video's tower output -> (its visual tokens [N, D], the rows the family
        appends after them, never pruned [e, D], or None)."""

    @abc.abstractmethod
    def sharp_image_outputs(self, image_input) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Each image's embeddings [m, D] and its rows' positions [m, 3] (None: 1-D)."""

    @abc.abstractmethod
    def sharp_embed_black_video(self, grid: Grid, black_row: torch.Tensor) -> torch.Tensor:
        """The tower's embedding of an all-black video of `grid` # [N, D], from one
        all-black input row as the processor made it (`sharp_black_pixels`)."""

    # ---- positions and the prompt's rows -------------------------------------------------
    @abc.abstractmethod
    def sharp_item_positions(self, grid: Grid, t_scale: float) -> torch.Tensor | None:
        """Each visual token's position offset within its item # [N, 3] long (None: 1-D)."""

    @abc.abstractmethod
    def sharp_video_rows(
        self, video_input, index: int, grid: Grid, t_scale: float
    ) -> tuple[torch.Tensor | None, ItemRows | None]:
        """The position offsets of the rows the `index`-th video puts in the prompt
        # [R, 3] long (None: 1-D), and which of those rows are text (None: all R = N rows
        are its visual tokens)."""

    @abc.abstractmethod
    def sharp_item_output(
        self,
        kept_visual: torch.Tensor,
        appended: torch.Tensor | None,
        item_positions: torch.Tensor | None,
        kept: torch.Tensor,
        rows: ItemRows | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What one item puts in the pruned prompt for its kept visual tokens (their
        embeddings `kept_visual` # [k, D], their original indices `kept` # [k]
        ascending), as `embed_multimodal` returns it, and which of the item's rows that is
        # [k'] long."""

    @abc.abstractmethod
    def sharp_media_rows(
        self, encoded: torch.Tensor, item_positions: torch.Tensor | None, kept_rows: torch.Tensor
    ) -> MediaRows:
        """An item's prompt rows and their positions, from its `sharp_item_output`, for the
        scoring pass of a later video of the same prompt."""

    @abc.abstractmethod
    def sharp_sequence_positions(
        self,
        prefix_positions: torch.Tensor,
        item_positions: torch.Tensor | None,
        num_item_rows: int,
        num_after: int,
    ) -> torch.Tensor:
        """The positions of a scoring sequence [prefix | item | num_after rows], as the
        real prompt has them, given the prefix's own # [3, P]. # [3, L] or [L] long"""


class SharpProcessorFamily(abc.ABC):
    """The processor side: the frontend, where vLLM processes a request's media."""

    @abc.abstractmethod
    def sharp_video_token_counts(self, processed) -> list[int] | None:
        """Visual tokens (the ones selection chooses from) of each processed video, or
        None when there are no videos."""

    @abc.abstractmethod
    def sharp_num_images(self, processed) -> int:
        """How many images the HF processor's output holds."""

    @abc.abstractmethod
    def sharp_never_pruned_rows(self, item) -> int:
        """Rows a processed video (`item`: its MultiModalKwargsItem) puts in the prompt
        besides its visual tokens, never pruned."""

    @abc.abstractmethod
    def sharp_token_means(self, processed, index: int) -> torch.Tensor:
        """The means of each visual token's input pixels over its parts (its patches, or
        the quarters of its square), per channel, for the `index`-th processed video, as
        the processor left them (normalised or not: the caller brings them to 0..1).
        # [groups, tokens per group, parts, C] float32"""

    @abc.abstractmethod
    def sharp_black_pixels(self) -> torch.Tensor:
        """What the worker needs to embed an all-black video of any size (one patch row,
        or one frame), as this model's processor normalises it."""


def media_token_id(config: Any, modality: str) -> int:
    """The placeholder token of `modality` ("video" or "image") in a model's HF config:
    Qwen configs name them `*_token_id`, LLaVA's `*_token_index`."""
    value = getattr(config, f"{modality}_token_id", None)
    return value if value is not None else getattr(config, f"{modality}_token_index")


class SharpMropeFamily(SharpModelFamily):
    """A family with M-RoPE positions (Qwen-VL): vLLM's pruning path strips each kept
    row's position channels and writes them into the prompt's position table
    (positions.py), starting from the table this hook's offsets give."""

    @abc.abstractmethod
    def sharp_media_positions(self, mm_features) -> list[tuple[int, Any]]:
        """Each media item's placeholder offset and the stock M-RoPE offsets of all its
        unpruned rows (# [3, R] numpy int64), sorted by offset."""
