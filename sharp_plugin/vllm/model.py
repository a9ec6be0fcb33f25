"""Worker side of the plugin, shared by every model family: per-video selection inside
`embed_multimodal`, the black-video prior and its cache, kept embeddings returned with
their original M-RoPE positions through vLLM's SupportsMultiModalPruning plumbing.

A family file mixes `SharpModelMixin` in before the stock model class and implements
the `_sharp_*` hooks (what differs between families: where the decoder lives, how a
video's grid and time scale are read, how to embed black frames).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import Any

import torch
from vllm.distributed import get_tensor_model_parallel_world_size
from vllm.logger import init_logger
from vllm.model_executor.models.utils import PPMissingLayer
from vllm.multimodal.video_prune.evs import recompute_mrope_positions as evs_recompute_positions

from sharp_plugin.core import NO_PRUNING, SharpSettings, select_tokens

from . import positions
from .bounded_store import BoundedStore
from .processor import ITEM_FIELDS, read_item
from .reports import WORKER_REPORTS
from .scoring_pass import DecoderScoringPass, ItemLayout

logger = init_logger(__name__)

# Increases with every selection this worker runs: a report whose number did not move
# came from the encoder cache, not a new selection.
_selection_numbers = itertools.count(1)

_PRIOR_CACHE_ENTRIES = 64
_BLACK_EMBED_CACHE_ENTRIES = 8


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


class SharpModelMixin:
    """Mix in before the family's stock model class."""

    # ---- family hooks ----------------------------------------------------------------
    def _sharp_decoder(self) -> torch.nn.Module:
        raise NotImplementedError

    def _sharp_spatial_merge_size(self) -> int:
        raise NotImplementedError

    def _sharp_video_t_scale(self, video_input, index: int) -> float:
        raise NotImplementedError

    def _sharp_embed_black_video(self, grid_thw: Sequence[int], black_row: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # ---- setup ------------------------------------------------------------------------
    def _sharp_init(self) -> None:
        self.is_multimodal_pruning_enabled = True
        self._sharp_tp_size = get_tensor_model_parallel_world_size()
        self._sharp_prior_cache: BoundedStore[torch.Tensor] = BoundedStore(_PRIOR_CACHE_ENTRIES)
        self._sharp_black_cache: BoundedStore[torch.Tensor] = BoundedStore(_BLACK_EMBED_CACHE_ENTRIES)

    # ---- embed_multimodal -------------------------------------------------------------
    def embed_multimodal(self, **kwargs: object):
        fields = {name: kwargs.pop(name, None) for name in ITEM_FIELDS}
        by_modality = self._parse_and_validate_multimodal_inputs(**kwargs)
        merge = self._sharp_spatial_merge_size()
        out: tuple[torch.Tensor, ...] = ()
        for modality, media_input in by_modality.items():
            if modality == "image":
                grids = media_input["image_grid_thw"].tolist()
                for emb, grid in zip(self._process_image_input(media_input), grids, strict=True):
                    item_positions = positions.media_positions(grid, merge, 1.0)
                    out += (positions.encode_kept(emb, item_positions, torch.arange(emb.shape[0])),)
            elif modality == "video":
                grids = media_input["video_grid_thw"].tolist()
                for index, (emb, grid) in enumerate(
                    zip(self._process_video_input(media_input), grids, strict=True)
                ):
                    t_scale = self._sharp_video_t_scale(media_input, index)
                    out += (self._select_video(emb, grid, t_scale, _item_fields(fields, index)),)
        return out

    def _select_video(self, visual, grid, t_scale, fields) -> torch.Tensor:
        merge = self._sharp_spatial_merge_size()
        item_positions = positions.media_positions(grid, merge, t_scale)  # [N, 3]
        item = read_item(fields["sharp_item"]) if fields["sharp_item"] is not None else None
        settings = SharpSettings.model_validate(item["settings"]) if item else NO_PRUNING
        started = time.perf_counter()
        scoring_pass = black_prior = None
        if settings.needs_scoring_pass:
            layout = ItemLayout(
                prefix_ids=fields["sharp_prefix_ids"],
                suffix_ids=fields["sharp_suffix_ids"],
                query_from=item["query_from"],
                positions=_sequence_positions(
                    len(fields["sharp_prefix_ids"]), item_positions, len(fields["sharp_suffix_ids"])
                ),
                tokens_per_group=(grid[1] // merge) * (grid[2] // merge),
            )
            decoder = self._sharp_decoder()
            if isinstance(decoder.layers[settings.prune_layer], PPMissingLayer):
                raise ValueError(
                    f"sharp.prune_layer {settings.prune_layer} is not on the first pipeline "
                    "stage; use a smaller prune_layer or fewer pipeline stages"
                )
            scoring_pass = DecoderScoringPass(decoder, settings.prune_layer, layout, self._sharp_tp_size)

            def black_prior(segment_groups: int) -> torch.Tensor:
                return self._black_prior(
                    grid, t_scale, settings, layout, scoring_pass, fields, segment_groups
                )

        selection = select_tokens(settings, visual, scoring_pass, black_prior)
        scoring_ms = (time.perf_counter() - started) * 1e3 if selection.scored else 0.0
        if item is not None:
            expected = item["num_kept"]
            if selection.kept.numel() != expected:  # would corrupt the prompt: fail loudly
                raise RuntimeError(
                    f"ShaRP kept {selection.kept.numel()} tokens, placeholders expect {expected}"
                )
            if item.get("mm_hash"):
                WORKER_REPORTS.put(
                    item["mm_hash"],
                    _report(settings, selection.num_tokens, selection.kept, scoring_ms, grid),
                )
        return positions.encode_kept(visual, item_positions, selection.kept)

    def _black_prior(self, grid, t_scale, settings, layout, scoring_pass, fields, segment_groups):
        """Scores of an all-black video with the same layout and query. It depends
        only on the layout and the query, so it is cached by them."""
        key = (
            tuple(grid),
            t_scale,
            settings.prune_layer,
            segment_groups,
            layout.query_from,
            tuple(layout.prefix_ids.tolist()),
            tuple(layout.suffix_ids.tolist()),
        )
        prior = self._sharp_prior_cache.get(key)
        if prior is None:
            black = self._sharp_black_cache.get(tuple(grid))
            if black is None:
                black = self._sharp_embed_black_video(grid, fields["sharp_black_pixels"])
                self._sharp_black_cache.put(tuple(grid), black)
            prior = scoring_pass(black, segment_groups).scores
            self._sharp_prior_cache.put(key, prior)
        return prior

    # ---- positions --------------------------------------------------------------------
    def recompute_mrope_positions(
        self, input_ids, multimodal_embeddings, mrope_positions, num_computed_tokens
    ):
        device = multimodal_embeddings[0].device if len(multimodal_embeddings) else mrope_positions.device
        if isinstance(input_ids, torch.Tensor):
            ids = input_ids.to(device=device, dtype=torch.long)
        else:
            ids = torch.tensor(input_ids, dtype=torch.long, device=device)
        decoded = [positions.decode(mm) for mm in multimodal_embeddings]
        new_positions, delta = evs_recompute_positions(
            ids,
            [pos for _, pos in decoded],
            mrope_positions,
            num_computed_tokens,
            self.config.vision_start_token_id,
            self.config.image_token_id,
            self.config.video_token_id,
        )
        return [emb for emb, _ in decoded], new_positions, delta

    def get_mrope_input_positions(self, input_tokens, mm_features):
        features = sorted(mm_features, key=lambda f: f.mm_position.offset)
        media = [
            (offset, feature.mm_position.length, positions.grid_positions(t, h, w, t_scale))
            for feature, (offset, t, h, w, t_scale) in zip(
                features, self.iter_mm_grid_thw(mm_features), strict=True
            )
        ]
        return positions.prompt_positions_with_pruned_media(len(input_tokens), media)


def _item_fields(fields: dict[str, Any], index: int) -> dict[str, Any]:
    """Row `index` of each batched field (a stacked tensor or a list of tensors)."""
    return {name: (value[index] if value is not None else None) for name, value in fields.items()}


def _sequence_positions(num_prefix: int, item_positions: torch.Tensor, num_suffix: int) -> torch.Tensor:
    """Positions of [prefix | video | suffix] as in the real prompt. # [3, L] long"""
    prefix = torch.arange(num_prefix).expand(3, -1)
    video = item_positions.T + num_prefix
    start = int(video.max()) + 1 if video.numel() else num_prefix
    suffix = torch.arange(num_suffix).expand(3, -1) + start
    return torch.cat([prefix, video, suffix], dim=1)


def _report(settings, num_tokens, kept, scoring_ms, grid) -> dict[str, Any]:
    return {
        "method": settings.method,
        "retention": settings.retention,
        "prune_layer": settings.prune_layer if settings.needs_scoring_pass else None,
        "num_tokens": num_tokens,
        "num_kept": int(kept.numel()),
        "scoring_ms": scoring_ms,
        "kept_indices": kept.tolist(),
        "grid_thw": list(grid),
        "selection_number": next(_selection_numbers),
    }
