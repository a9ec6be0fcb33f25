"""The worker side of the plugin, shared by every model family: `embed_multimodal` with
the per-video selection, composed from the parts that each own one concept:

- vision_tower.py: the tower's output, cached by content, run in bounded chunks;
- scoring_layout.py: the scoring pass's sequence, with the earlier media of the prompt;
- video_selection.py: planning, packed scoring passes, selection, fallback and report;
- black_prior.py: the black-video prior and its caches;
- memory_profile.py: what vLLM's memory profile must see.

A family mixes `SharpModelMixin` in before its stock model class and implements the
hooks of `SharpModelFamily` (family.py).
"""

from __future__ import annotations

from typing import Any

import torch
from vllm.distributed import get_tensor_model_parallel_world_size
from vllm.logger import init_logger
from vllm.model_executor.models.utils import PPMissingLayer

from sharp_plugin.core.redundancy import present_token_indices

from .black_prior import BlackPrior
from .family import SharpModelFamily, media_token_id
from .item_fields import IMAGE_HASH, ITEM_ROW, VIDEO_FIELDS, ItemRow, read_image_hash
from .memory_profile import MemoryProfile
from .scoring_layout import ItemLayout, ItemRows, MediaContext, build_layout
from .scoring_pass import DecoderScoringPass
from .video_selection import VideoSelector
from .vision_tower import VisionTower

logger = init_logger(__name__)


def enable_pruning_path(vllm_config) -> None:
    """Turn on vLLM's multimodal-pruning path (strip position channels, recompute
    M-RoPE, encode videos one at a time) for this engine.

    vLLM switches it on only when `video_pruning_rate > 0`. The value itself is EVS's
    rate, which this model never reads (the count comes from each request), so setting
    it here makes `--hf-overrides '{"architectures": [...]}'` or config.json enough.
    Runs in the worker during model construction, before the runner reads the flag.
    Listed in docs/patches.md.
    """
    mm_config = vllm_config.model_config.multimodal_config
    if mm_config is not None and not mm_config.is_multimodal_pruning_enabled():
        mm_config.video_pruning_rate = 0.5
        logger.info("ShaRP: enabled vLLM's multimodal pruning path (per-request counts).")
    # Encoder CUDA graphs (`cudagraph_mm_encoder`, off by default) replay the vision tower
    # in place of `embed_multimodal`: no selection would run while the placeholders
    # expect the kept count. Both runners build their graph manager after the model.
    compilation = vllm_config.compilation_config
    if getattr(compilation, "cudagraph_mm_encoder", False):
        compilation.cudagraph_mm_encoder = False
        logger.warning("ShaRP: encoder CUDA graphs bypass the selection; turned them off.")


class SharpModelMixin(SharpModelFamily):
    """Mix in before the family's stock model class; call `_sharp_init` after its
    `__init__`."""

    def _sharp_init(self) -> None:
        self.sharp_tp_size = get_tensor_model_parallel_world_size()
        self.sharp_tower = VisionTower(self, self.config)
        self.sharp_media = MediaContext()
        self.sharp_prior = BlackPrior(self)
        self.sharp_profile = MemoryProfile(self, self.config)
        self.sharp_selector = VideoSelector(self)

    def embed_multimodal(self, **kwargs: object):
        fields = {name: kwargs.pop(name, None) for name in VIDEO_FIELDS}
        image_hashes = kwargs.pop(IMAGE_HASH, None)
        by_modality = self._parse_and_validate_multimodal_inputs(**kwargs)
        out: tuple[torch.Tensor, ...] = ()
        for modality, media_input in by_modality.items():
            if modality == "image":
                out += self._embed_images(media_input, image_hashes)
            elif modality == "video":
                out += self._embed_videos(media_input, fields)
        return out

    def _embed_images(self, image_input, image_hashes) -> tuple[torch.Tensor, ...]:
        """Images are never pruned; each one is remembered for the scoring pass of a later
        video of its prompt."""
        out = ()
        for index, (emb, item_positions) in enumerate(self.sharp_image_outputs(image_input)):
            everything = torch.arange(emb.shape[0])
            encoded, kept_rows = self.sharp_item_output(emb, None, item_positions, everything, None)
            if image_hashes is not None:
                media_rows = self.sharp_media_rows(encoded, item_positions, kept_rows)
                self.sharp_media.remember(read_image_hash(image_hashes[index]), media_rows)
            out += (encoded,)
        return out

    def _embed_videos(self, video_input, fields) -> tuple[torch.Tensor, ...]:
        grids = self.sharp_video_grids(video_input)
        per_video = [_row_of_fields(fields, index) for index in range(len(grids))]
        rows = [ItemRow.from_tensor(f[ITEM_ROW]) if f[ITEM_ROW] is not None else None for f in per_video]
        tower = self.sharp_tower.embed(video_input, rows)
        # A video whose scoring context holds an earlier video of this same call (two
        # videos of one prompt) needs that video's selection first: its layout waits.
        hashes = [row.mm_hash if row is not None else None for row in rows]
        plans = []
        for index, (emb, grid) in enumerate(zip(tower.embeddings, grids, strict=True)):
            t_scale = self.sharp_video_t_scale(video_input, index)
            item_positions, text_rows = self.sharp_video_rows(video_input, index, grid, t_scale)
            plans.append(
                self.sharp_selector.plan(
                    emb,
                    grid,
                    t_scale,
                    per_video[index],
                    rows[index],
                    waits_for=set(hashes[:index]) - {None},
                    item_positions=item_positions,
                    rows=text_rows,
                    present=self._present_tokens(grid, rows[index]),
                    tower_ms=tower.tower_ms[index],
                )
            )
        self.sharp_selector.score_packed(plans)
        selected = tuple(
            self.sharp_selector.select(plan, cached)
            for plan, cached in zip(plans, tower.from_cache, strict=True)
        )
        if plans and plans[0].profiling:
            self.sharp_profile.longest_video(plans[0], video_input, sum(p.visual.shape[0] for p in plans))
        return selected

    def _present_tokens(self, grid, row: ItemRow | None) -> torch.Tensor | None:
        """The original indices of the tokens the tower embedded, when it skipped groups."""
        if row is None or not row.skipped_groups:
            return None
        groups, height, width = self.sharp_token_grid(grid)
        return present_token_indices(groups, height * width, row.skipped_groups)

    # ---- the scoring pass, for the parts above -------------------------------------------
    def sharp_layout(
        self,
        grid,
        item_positions: torch.Tensor | None,
        prefix_ids: torch.Tensor,
        suffix_ids: torch.Tensor,
        query_from: int,
        *,
        context=(),
        notes: dict[str, Any] | None = None,
        appended: torch.Tensor | None = None,
        rows: ItemRows | None = None,
        present: torch.Tensor | None = None,
    ) -> ItemLayout:
        """The scoring sequence of one video of this family (scoring_layout.build_layout);
        `present`: the original indices of its visual tokens when the tower skipped
        groups."""
        groups, height, width = self.sharp_token_grid(grid)
        return build_layout(
            prefix_ids=prefix_ids,
            suffix_ids=suffix_ids,
            query_from=query_from,
            media_token_ids=(media_token_id(self.config, "image"), media_token_id(self.config, "video")),
            media=self.sharp_media,
            context=context,
            tokens_per_group=height * width,
            num_item_rows=groups * height * width,
            item_positions=item_positions,
            sequence_positions=self.sharp_sequence_positions,
            appended_rows=appended,
            item_rows=rows,
            present=present,
            notes=notes,
        )

    def sharp_scoring_decoder(self, prune_layer: int) -> torch.nn.Module:
        decoder = self.sharp_decoder()
        if isinstance(decoder.layers[prune_layer], PPMissingLayer):
            raise ValueError(f"prune_layer {prune_layer} is not on the first pipeline stage")
        return decoder

    def sharp_scoring_pass(self, prune_layer: int, layout: ItemLayout) -> DecoderScoringPass:
        return DecoderScoringPass(
            self.sharp_scoring_decoder(prune_layer), prune_layer, layout, self.sharp_tp_size
        )


def _row_of_fields(fields: dict[str, Any], index: int) -> dict[str, Any]:
    """Row `index` of each batched field (a stacked tensor or a list of tensors)."""
    return {name: (value[index] if value is not None else None) for name, value in fields.items()}
