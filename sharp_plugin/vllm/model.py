"""Worker side of the plugin, shared by every model family: per-video selection inside
`embed_multimodal`, the black-video prior and its cache, kept embeddings returned with
their original M-RoPE positions through vLLM's SupportsMultiModalPruning plumbing.

A family file mixes `SharpModelMixin` in before the stock model class and implements
the `_sharp_*` hooks (what differs between families: where the decoder lives, how a
video's grid and time scale are read, how to embed black frames).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from vllm.distributed import get_tensor_model_parallel_world_size
from vllm.logger import init_logger
from vllm.model_executor.models.utils import PPMissingLayer

from sharp_plugin.core import NO_PRUNING, ScoringResult, Selection, SharpSettings, select_tokens
from sharp_plugin.core.masks import SegmentMask
from sharp_plugin.core.selection import uniform_indices

from . import positions
from .bounded_store import BoundedStore
from .processor import IMAGE_HASH_FIELD, ITEM_FIELDS, PROFILE_KEY, media_token_id, read_item
from .reports import WORKER_REPORTS
from .scoring_pass import DecoderScoringPass, ItemLayout, ItemRows, ScoringItem, score_together

logger = init_logger(__name__)

# Device caches, sized so that they stay small next to the KV cache: 64 priors of N
# float32 scores each, and black-frame embeddings of one temporal group per grid size
# (the family embeds one group and tiles it), at most 64 MiB in all.
_PRIOR_CACHE_ENTRIES = 64
_BLACK_EMBED_CACHE_BYTES = 64 << 20
_PROFILE_QUERY_TOKENS = 64
# The vision tower's output, cached by video content: 512 MiB holds about 17 videos of
# N = 4096 tokens at Qwen2.5-VL-7B's width (3584, bf16). Reserved by the memory profile.
_VISION_CACHE_MB = 512
# Vision-tower patches per chunk of a long video: 64k patches is 64 temporal groups of a
# 448 x 448 Qwen-VL video (about 2 minutes at 1 fps); a 7B tower's widest activation
# ([patches, 3420] in bf16) is then under 0.5 GB, however long the video.
_TOWER_CHUNK_PATCHES = 1 << 16
# What each recent media item contributes to the prompt (kept embeddings and positions),
# by cache hash: a later video's scoring pass puts the media before it in its context.
_MEDIA_CONTEXT_BYTES = 128 << 20


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


class SharpModelMixin:
    """Mix in before the family's stock model class."""

    # ---- family hooks ----------------------------------------------------------------
    def _sharp_decoder(self) -> torch.nn.Module:
        raise NotImplementedError

    def _sharp_video_grids(self, video_input) -> list[list[int]]:
        """Each video's grid as the family reports it (Qwen: its `video_grid_thw` row;
        LLaVA-OneVision: frames x pooled rows x pooled columns)."""
        raise NotImplementedError

    def _sharp_token_grid(self, grid: Sequence[int]) -> tuple[int, int, int]:
        """(temporal groups, rows, columns) of a video's visual tokens: kept indices are
        row-major over this grid (vLLM's t, h, w order)."""
        raise NotImplementedError

    def _sharp_tokens_per_group(self, grid: Sequence[int]) -> int:
        """Visual tokens per temporal group (the unit of segment-aware masking)."""
        _, rows, columns = self._sharp_token_grid(grid)
        return rows * columns

    def _sharp_video_t_scale(self, video_input, index: int) -> float:
        """M-RoPE time steps per temporal group (families with 1-D positions: 1.0)."""
        return 1.0

    def _sharp_item_positions(self, grid: Sequence[int], t_scale: float) -> torch.Tensor | None:
        """Each visual token's M-RoPE (t, h, w) offset within its item, # [N, 3] long; None
        in families with 1-D positions, whose kept tokens take consecutive positions."""
        return None

    def _sharp_video_rows(
        self, video_input, index: int, grid: Sequence[int], t_scale: float
    ) -> tuple[torch.Tensor | None, ItemRows | None]:
        """The M-RoPE offsets of the rows one video puts in the prompt (# [R, 3] long, or
        None: 1-D), and which of those rows are text (None: all R = N rows are its visual
        tokens). Qwen3-VL's rows interleave timestamp text with the groups."""
        return self._sharp_item_positions(grid, t_scale), None

    def _sharp_media_positions(self, mm_features) -> list[tuple[int, np.ndarray]]:
        """Each media item's placeholder offset and the stock M-RoPE offsets of all its
        unpruned rows (# [3, R]), sorted by offset: the prompt's initial position table."""
        features = sorted(mm_features, key=lambda f: f.mm_position.offset)
        return [
            (offset, positions.grid_positions(t, h, w, t_scale))
            for feature, (offset, t, h, w, t_scale) in zip(
                features, self.iter_mm_grid_thw(mm_features), strict=True
            )
        ]

    def _sharp_split_video_output(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The vision tower's output for one video -> (visual tokens [N, D], rows the
        family appends that are never pruned [e, D] or None)."""
        return embeddings, None

    def _sharp_image_outputs(self, image_input) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Each image's embeddings [m, D] and M-RoPE offsets [m, 3] (None: 1-D)."""
        raise NotImplementedError

    def _sharp_embed_black_video(self, grid_thw: Sequence[int], black_row: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _sharp_video_subset(self, video_input, indices: Sequence[int]):
        """The same kind of video input, holding only the videos at `indices`."""
        raise NotImplementedError

    # ---- setup ------------------------------------------------------------------------
    def _sharp_init(self) -> None:
        self._sharp_tp_size = get_tensor_model_parallel_world_size()
        self._sharp_prior_cache: BoundedStore[torch.Tensor] = BoundedStore(_PRIOR_CACHE_ENTRIES)
        self._sharp_black_cache: BoundedStore[torch.Tensor] = BoundedStore(
            max_bytes=_BLACK_EMBED_CACHE_BYTES, size_of=nested_tensor_bytes
        )
        # The vision tower's output by video content (see _video_embeddings). Size:
        # `sharp_vision_cache_mb` in the HF config (--hf-overrides), 0 turns it off.
        megabytes = getattr(self.config, "sharp_vision_cache_mb", _VISION_CACHE_MB)
        self._sharp_vision_cache_bytes = int(megabytes) << 20
        # The vision tower runs a long video a few temporal groups at a time, so its
        # activations stay bounded whatever the video's length (`sharp_tower_chunk_patches`
        # in the HF config: patches per chunk; 0 runs each video whole).
        self._sharp_tower_chunk_patches = int(
            getattr(self.config, "sharp_tower_chunk_patches", _TOWER_CHUNK_PATCHES)
        )
        # The longest video (unpruned visual tokens) this engine takes: the memory profile
        # runs a scoring pass of that size, and the processor refuses longer videos
        # (`sharp_max_video_tokens` in the HF config; unset: the profile's own dummy
        # videos, sized by the context, and no limit).
        self._sharp_max_video_tokens = int(getattr(self.config, "sharp_max_video_tokens", None) or 0)
        self._sharp_reserved_video_tokens = 0  # what the profile's largest scoring pass held
        self._sharp_media_context: BoundedStore[tuple[torch.Tensor, torch.Tensor, int]] = BoundedStore(
            max_bytes=_MEDIA_CONTEXT_BYTES, size_of=lambda entry: nested_tensor_bytes(entry[0])
        )
        self._sharp_vision_cache: BoundedStore[torch.Tensor] | None = (
            BoundedStore(max_bytes=self._sharp_vision_cache_bytes, size_of=nested_tensor_bytes)
            if self._sharp_vision_cache_bytes > 0
            else None
        )

    # ---- embed_multimodal -------------------------------------------------------------
    def embed_multimodal(self, **kwargs: object):
        fields = {name: kwargs.pop(name, None) for name in ITEM_FIELDS}
        image_rows = kwargs.pop(IMAGE_HASH_FIELD, None)
        by_modality = self._parse_and_validate_multimodal_inputs(**kwargs)
        out: tuple[torch.Tensor, ...] = ()
        for modality, media_input in by_modality.items():
            if modality == "image":
                for index, (emb, item_positions) in enumerate(self._sharp_image_outputs(media_input)):
                    everything = torch.arange(emb.shape[0])
                    encoded, _ = self._item_output(emb, None, item_positions, everything)
                    if image_rows is not None:
                        image_hash = read_item(image_rows[index])["mm_hash"]
                        self._remember_media(image_hash, encoded, item_positions, everything)
                    out += (encoded,)
            elif modality == "video":
                out += self._embed_videos(media_input, fields)
        return out

    def _embed_videos(self, media_input, fields) -> tuple[torch.Tensor, ...]:
        grids = self._sharp_video_grids(media_input)
        per_item = [_item_fields(fields, index) for index in range(len(grids))]
        items = [read_item(f["sharp_item"]) if f["sharp_item"] is not None else None for f in per_item]
        embeddings, from_cache = self._video_embeddings(media_input, items)
        # A video whose scoring context holds an earlier video of this same call (two
        # videos of one prompt) needs that video's selection first: its layout waits.
        hashes = [item.get("mm_hash") if item else None for item in items]
        plans = []
        for index, (emb, grid) in enumerate(zip(embeddings, grids, strict=True)):
            t_scale = self._sharp_video_t_scale(media_input, index)
            item_positions, rows = self._sharp_video_rows(media_input, index, grid, t_scale)
            plans.append(
                self._plan_video(
                    emb,
                    grid,
                    t_scale,
                    per_item[index],
                    items[index],
                    waits_for=set(hashes[:index]) - {None},
                    item_positions=item_positions,
                    rows=rows,
                )
            )
        self._score_together(plans)
        selected = tuple(
            self._select_video(plan, cached) for plan, cached in zip(plans, from_cache, strict=True)
        )
        if plans and plans[0].profiling:
            self._profile_longest_video(plans[0], media_input, sum(p.visual.shape[0] for p in plans))
        return selected

    def _item_output(
        self, visual, extra, item_positions, kept: torch.Tensor, rows: ItemRows | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What an item puts in the prompt, and which of its rows that is (# [k'] long):
        its kept rows, with their M-RoPE positions in extra channels (see positions.py),
        its text rows among them (`rows`: never pruned, embedded as text, no deepstack),
        or, with 1-D positions, the kept rows followed by the family's never-pruned rows."""
        if rows is not None:  # gather the kept visual rows and every text row, in row order
            device = visual.device
            candidates = torch.cat([rows.text_rows, rows.visual_rows[kept.cpu()]])  # item rows
            order = candidates.argsort()
            text = self._sharp_decoder().embed_input_ids(rows.text_ids.to(device, non_blocking=True))
            text_rows = visual.new_zeros(text.shape[0], visual.shape[-1])  # deepstack channels: zeros
            text_rows[:, : text.shape[-1]] = text.to(visual.dtype)
            content = torch.cat([text_rows, visual[kept.to(device, non_blocking=True)]])
            kept_rows = candidates[order]
            ordered = content[order.to(device, non_blocking=True)]
            return positions.with_position_channels(ordered, item_positions, kept_rows), kept_rows
        if item_positions is not None:
            return positions.encode_kept(visual, item_positions, kept), kept
        kept_rows = visual[kept.to(visual.device, non_blocking=True)]
        return (kept_rows if extra is None else torch.cat([kept_rows, extra.to(kept_rows.dtype)])), kept

    def _video_embeddings(self, media_input, items) -> tuple[list[torch.Tensor], list[bool]]:
        """The vision tower's output for the videos of this call, and for each whether it
        came from the content cache. A follow-up question on a known video has a new
        mm_hash (the question is part of its selection), so vLLM's encoder cache misses;
        the tower's output depends on the pixels alone, so this cache, keyed by the
        content hash, serves it. The tower runs once over the videos it misses. Profiling's
        dummy videos are never cached."""
        keys = [item.get("content_hash") if item and not item.get(PROFILE_KEY) else None for item in items]
        cache = self._sharp_vision_cache
        found = [cache.get(key) if cache is not None and key else None for key in keys]
        from_cache = [emb is not None for emb in found]
        missing = [index for index, cached in enumerate(from_cache) if not cached]
        if missing:
            subset = (
                media_input if len(missing) == len(items) else self._sharp_video_subset(media_input, missing)
            )
            for index, emb in zip(missing, self._tower(subset, len(missing)), strict=True):
                found[index] = emb
                if cache is not None and keys[index]:
                    # Each output is a view of the tower's one output tensor: a cached view
                    # would keep all of it alive while the cache counts only its share.
                    cache.put(keys[index], emb if len(missing) == 1 else emb.clone())
        if any(item and item.get(PROFILE_KEY) for item in items):
            self._reserve_vision_cache(found[0].device)
        return found, from_cache

    def _tower(self, media_input, num_videos: int) -> list[torch.Tensor]:
        """The vision tower's output per video: the videos of at most one chunk together in
        one call, and each longer video a chunk of temporal groups at a time (every
        family's tower attends within a temporal group, so this is the same output)."""
        budget = self._sharp_tower_chunk_patches
        sizes = self._sharp_video_patches(media_input)
        if not budget or sizes is None or max(sizes) <= budget:
            return list(self._process_video_input(media_input))
        outputs: list[torch.Tensor | None] = [None] * num_videos
        short = [index for index, size in enumerate(sizes) if size <= budget]
        if short:
            together = self._process_video_input(self._sharp_video_subset(media_input, short))
            for index, emb in zip(short, together, strict=True):
                outputs[index] = emb
        for index in (index for index, size in enumerate(sizes) if size > budget):
            video = self._sharp_video_subset(media_input, [index])
            chunks = self._sharp_video_chunks(video, budget)
            outputs[index] = torch.cat([self._process_video_input(chunk)[0] for chunk in chunks])
        return outputs

    def _sharp_video_patches(self, video_input) -> list[int] | None:
        """Each video's vision-tower input rows (None: the family does not chunk)."""
        return None

    def _sharp_video_chunks(self, video_input, budget: int):
        """One video's input split into runs of whole temporal groups of at most `budget`
        patches each (at least one group)."""
        raise NotImplementedError

    def _reserve_vision_cache(self, device: torch.device) -> None:
        """During vLLM's memory profile: allocate the vision cache's whole budget once, so
        the profiled peak (and with it the KV cache's size) leaves room for the cache."""
        if self._sharp_vision_cache_bytes:
            reserve = torch.empty(self._sharp_vision_cache_bytes, dtype=torch.uint8, device=device)
            del reserve

    def _plan_video(
        self, visual, grid, t_scale, fields, item, waits_for=frozenset(), item_positions=None, rows=None
    ) -> _VideoPlan:
        """What one video's selection needs, with its scoring-pass layout when it has one
        and can have it now (so that the passes of a call's videos can run together). A
        video whose context includes an item in `waits_for` gets its layout when it is
        selected, after that item. A layout that cannot be built is kept as the plan's
        failure, for `_select_video` to fall back on."""
        visual, extra = self._sharp_split_video_output(visual)
        plan = _VideoPlan(
            visual=visual,
            extra=extra,
            grid=grid,
            t_scale=t_scale,
            item_positions=item_positions,  # [R, 3], or None: 1-D
            rows=rows,
            fields=fields,
            item=item,
            settings=SharpSettings.model_validate(item["settings"]) if item else NO_PRUNING,
        )
        if plan.profiling:
            plan.scoring_settings = self._profile_settings()
        elif plan.settings.needs_scoring_pass:
            plan.scoring_settings = plan.settings
        if plan.scoring_settings is not None and not waits_for.intersection(plan.context):
            try:
                plan.layout = self._scoring_layout(plan)
            except Exception as exc:  # reported by _select_video, which falls back
                plan.failure = exc
        return plan

    def _scoring_layout(self, plan: _VideoPlan) -> ItemLayout:
        if plan.profiling:
            return self._profile_layout(plan.grid, plan.item_positions, plan.extra, rows=plan.rows)
        return self._layout(
            plan.grid,
            plan.item_positions,
            plan.fields["sharp_prefix_ids"],
            plan.fields["sharp_suffix_ids"],
            plan.item["query_from"],
            plan.context,
            plan.notes,
            tail=plan.extra,
            rows=plan.rows,
        )

    def _profile_layout(self, grid, item_positions, tail, rows=None) -> ItemLayout:
        """The memory profile's layout: no prompt before the video and a query as long as a
        typical question after it; the ids do not matter for memory."""
        prefix = torch.zeros(0, dtype=torch.long)
        suffix = torch.zeros(_PROFILE_QUERY_TOKENS, dtype=torch.long)
        return self._layout(grid, item_positions, prefix, suffix, query_from=1, tail=tail, rows=rows)

    def _score_together(self, plans: Sequence[_VideoPlan]) -> None:
        """Run the scoring passes of this call's videos together, one packed pass per
        scoring layer (see `score_together`), and leave each result on its plan. A video
        alone at its layer is scored inside its own selection, as before. If a packed
        pass fails, its videos are scored one at a time instead."""
        by_layer: dict[int, list[_VideoPlan]] = {}
        for plan in plans:
            if plan.layout is not None and plan.failure is None:
                by_layer.setdefault(plan.scoring_settings.prune_layer, []).append(plan)
        for prune_layer, group in by_layer.items():
            # The profile reserved one pass over the longest video: a packed pass longer
            # than that is scored one video at a time instead.
            too_long = self._sharp_max_video_tokens and (
                sum(p.visual.shape[0] for p in group) > self._sharp_max_video_tokens
            )
            if len(group) < 2 or too_long:
                continue
            started = time.perf_counter()
            try:
                results = score_together(
                    self._scoring_decoder(prune_layer),
                    prune_layer,
                    [
                        ScoringItem(
                            p.layout,
                            p.visual,
                            p.scoring_settings.effective().segment_mask_for(p.visual.shape[0]),
                        )
                        for p in group
                    ],
                    self._sharp_tp_size,
                )
            except Exception:
                logger.exception("ShaRP: packed scoring pass failed; scoring these videos one at a time")
                continue
            elapsed_ms = (time.perf_counter() - started) * 1e3
            for plan, result in zip(group, results, strict=True):
                plan.prescored = result
                plan.notes["scored_with"] = len(group)
                plan.shared_scoring_ms = elapsed_ms

    def _select_video(self, plan: _VideoPlan, vision_cached: bool) -> torch.Tensor:
        item, settings = plan.item, plan.settings
        if plan.profiling:
            self._profile_selection(plan)
        started = time.perf_counter()
        fallback = None
        try:
            if plan.failure is not None:
                raise plan.failure
            selection = self._run_selection(plan)
            if item is not None and selection.kept.numel() != item["num_kept"]:
                raise RuntimeError(
                    f"kept {selection.kept.numel()} tokens, placeholders expect {item['num_kept']}"
                )
        except Exception as exc:
            # Last line of defence: an exception here would kill the engine core and
            # every request in flight. The processor validates everything a request
            # controls, so reaching this is a bug; the request still completes with a
            # safe selection of the same k tokens, and its report names the failure.
            logger.exception("ShaRP selection failed; falling back to uniform selection")
            fallback = f"{type(exc).__name__}: {exc}"[:300]
            num_tokens = plan.visual.shape[0]
            kept = uniform_indices(num_tokens, item["num_kept"]) if item else torch.arange(num_tokens)
            selection = Selection(kept, num_tokens, scored=False)
        # A packed pass's time is the time each of its videos waited for its scores.
        own_ms = (time.perf_counter() - started) * 1e3
        scoring_ms = plan.shared_scoring_ms + own_ms if selection.scored else 0.0
        encoded, kept_rows = self._item_output(
            plan.visual, plan.extra, plan.item_positions, selection.kept, plan.rows
        )
        if item is not None and not plan.profiling:
            self._remember_media(item.get("mm_hash"), encoded, plan.item_positions, kept_rows)
        if item is not None and item.get("mm_hash"):
            WORKER_REPORTS.put(
                item["mm_hash"],
                _report(
                    settings,
                    selection,
                    scoring_ms,
                    self._sharp_token_grid(plan.grid),
                    fallback,
                    plan.notes,
                    vision_cached,
                ),
            )
        return encoded

    def _run_selection(self, plan: _VideoPlan, settings: SharpSettings | None = None) -> Selection:
        """select_tokens for one video; the scoring pass answers from the packed pass's
        result when there is one. `settings` overrides the plan's (the profile run)."""
        settings = plan.settings if settings is None else settings
        scoring_pass = black_prior = None
        if settings.needs_scoring_pass:
            if plan.layout is None:  # it waited for an earlier video of this call
                plan.layout = self._scoring_layout(plan)
            layout = plan.layout
            scoring_pass = self._scoring_pass(settings.prune_layer, layout)
            if plan.prescored is not None:
                mask = settings.effective().segment_mask_for(plan.visual.shape[0])
                scoring_pass = _Prescored(scoring_pass, plan.visual, mask, plan.prescored)

            def black_prior(mask: SegmentMask) -> torch.Tensor:
                if plan.profiling:  # the memory of computing one, never cached
                    black = self._black_embedding(plan.grid, plan.fields["sharp_black_pixels"])
                    return scoring_pass(black, mask).scores
                prior, cached = self._black_prior(
                    plan.grid,
                    plan.t_scale,
                    plan.item_positions,
                    settings,
                    layout,
                    plan.item.get("prior"),
                    plan.fields,
                    mask,
                    plan.context,
                )
                plan.notes["prior"] = "cached" if cached else "computed"
                return prior

        return select_tokens(settings, plan.visual, scoring_pass, black_prior)

    def _layout(
        self,
        grid,
        item_positions,
        prefix_ids,
        suffix_ids,
        query_from: int,
        context=(),
        notes=None,
        tail=None,
        rows: ItemRows | None = None,
    ) -> ItemLayout:
        """The scoring pass's sequence for one video. Each media slot in the prefix (one
        placeholder token per earlier item, see the processor's `_split_prompt`) becomes
        what that item put in the prompt, at its prompt positions, when this worker still
        holds it (`_sharp_media_context`); a slot it no longer holds is left out and
        counted in `notes["context_missing"]`. With 1-D positions (`item_positions` None)
        the sequence's positions are simply 0..L-1, as in the real prompt, where every
        earlier item holds exactly its kept rows. `tail`: the rows the family puts after
        the visual tokens (never pruned), which open the scoring pass's suffix."""
        media_ids = (media_token_id(self.config, "image"), media_token_id(self.config, "video"))
        hashes = iter(context)
        ids: list[int] = []
        media: list[tuple[int, torch.Tensor]] = []
        columns: list[torch.Tensor] = []
        next_position, text_run, missing = 0, 0, 0
        for token in prefix_ids.tolist():
            if token not in media_ids:
                ids.append(token)
                text_run += 1
                continue
            columns.append(torch.arange(next_position, next_position + text_run).expand(3, -1))
            next_position, text_run = next_position + text_run, 0
            key = next(hashes, None)
            stored = self._sharp_media_context.get(key) if key else None
            if stored is None:
                missing += 1
                continue
            media_rows, rows_positions, next_offset = stored
            media.append((len(ids), media_rows))
            ids.append(token)
            if rows_positions is None:  # 1-D: the item's rows take the next positions
                rows_positions, next_offset = (
                    torch.arange(media_rows.shape[0]).unsqueeze(1).expand(-1, 3),
                    media_rows.shape[0],
                )
            columns.append(rows_positions.T + next_position)
            next_position += next_offset
        columns.append(torch.arange(next_position, next_position + text_run).expand(3, -1))
        if notes is not None:
            notes["context_missing"] = missing
        prefix_positions = torch.cat(columns, dim=1)
        if item_positions is None:
            num_tail = 0 if tail is None else tail.shape[0]
            length = prefix_positions.shape[1] + self._num_visual(grid) + num_tail + len(suffix_ids)
            sequence_positions = torch.arange(length)
        else:
            sequence_positions = _sequence_positions(prefix_positions, item_positions, len(suffix_ids))
        return ItemLayout(
            prefix_ids=torch.tensor(ids, dtype=torch.long),
            suffix_ids=suffix_ids,
            query_from=query_from,
            positions=sequence_positions,
            tokens_per_group=self._sharp_tokens_per_group(grid),
            prefix_media=tuple(media),
            visual_tail=tail,
            item_rows=rows,
        )

    def _num_visual(self, grid: Sequence[int]) -> int:
        return int(grid[0]) * self._sharp_tokens_per_group(grid)

    def _remember_media(self, mm_hash, encoded, item_positions, kept) -> None:
        """Keep what an item put in the prompt (its kept rows, their positions, the text
        offset after it) for the scoring pass of a later video in the same prompt.
        `encoded` is the item's output (encode_kept): its embedding columns are kept as a
        view, so nothing is gathered or copied a second time."""
        if not mm_hash:
            return
        if item_positions is None:  # 1-D: the output is the rows, in prompt order
            self._sharp_media_context.put(mm_hash, (encoded, None, None))
            return
        rows = encoded[:, : -positions.NUM_CHANNELS]
        entry = (rows, item_positions[kept], positions.next_text_offset(item_positions))
        self._sharp_media_context.put(mm_hash, entry)

    def _scoring_decoder(self, prune_layer: int) -> torch.nn.Module:
        decoder = self._sharp_decoder()
        if isinstance(decoder.layers[prune_layer], PPMissingLayer):
            raise ValueError(f"prune_layer {prune_layer} is not on the first pipeline stage")
        return decoder

    def _scoring_pass(self, prune_layer: int, layout: ItemLayout) -> DecoderScoringPass:
        return DecoderScoringPass(
            self._scoring_decoder(prune_layer), prune_layer, layout, self._sharp_tp_size
        )

    def _profile_settings(self) -> SharpSettings:
        layers = len(self._sharp_decoder().layers)
        return SharpSettings(method="sharp", retention=0.5, prune_layer=min(2, layers - 1))

    def _profile_selection(self, plan: _VideoPlan) -> None:
        """vLLM's memory profile embeds dummy videos of the largest size the config
        allows, and they never prune (their placeholders are the maximum). Run a full
        ShaRP selection over them anyway (scoring pass, packed with the call's other
        dummy videos as a real step's would be, black prior, dedup) and discard it, so
        that the profiler sees the selection's peak scratch memory and reserves it."""
        self._run_selection(plan, plan.scoring_settings)

    def _profile_longest_video(self, plan: _VideoPlan, media_input, profiled_tokens: int) -> None:
        """During vLLM's memory profile, when `sharp_max_video_tokens` is longer than the
        profile's dummy videos (they are sized by the context; a long video is not):
        hold what such a video holds in the worker while it is selected, and run its
        scoring pass, so that the profiled peak (and with it the KV cache's size) leaves
        room for it. What it holds: its pixels (the dummy's bytes per token, scaled; they
        stay alive through the encoder step) and its tower output, the dummy's tiled to
        the length. Its tower runs in chunks (`_tower`), which the dummy already covers."""
        tokens = self._sharp_max_video_tokens
        unpruned = plan.visual.shape[0]
        self._sharp_reserved_video_tokens = max(unpruned, tokens)
        if tokens <= unpruned:
            return
        groups_in_dummy = int(plan.grid[0])
        per_group = self._sharp_tokens_per_group(plan.grid)
        groups = -(-tokens // per_group)
        grid = [groups, *(int(x) for x in plan.grid[1:])]
        visual = plan.visual.repeat(-(-groups // groups_in_dummy), 1)[: groups * per_group]
        pixels_per_token = nested_tensor_bytes(media_input) / max(profiled_tokens, 1)
        pixel_bytes = int(pixels_per_token * (visual.shape[0] - unpruned))
        pixels = torch.empty(pixel_bytes, dtype=torch.uint8, device=visual.device)
        settings = self._profile_settings()
        layout = self._profile_layout(grid, self._sharp_item_positions(grid, plan.t_scale), plan.extra)
        mask = settings.effective().segment_mask_for(visual.shape[0])
        self._scoring_pass(settings.prune_layer, layout)(visual, mask)
        del pixels
        logger.info(
            "ShaRP: the memory profile held a %d-token video's pixels and scoring pass "
            "(sharp_max_video_tokens).",
            visual.shape[0],
        )

    def _black_prior(
        self,
        grid,
        t_scale,
        item_positions,
        settings,
        layout,
        generic_query,
        fields,
        mask: SegmentMask,
        context=(),
    ) -> tuple[torch.Tensor, bool]:
        """Scores of an all-black video with the same layout, scored by the request's own
        prompt text or, with `prior_query: generic`, by the processor's fixed generic chat
        (`generic_query`: its prefix, suffix and query_from). Either way the prior depends
        only on what its cache key holds. Returns (prior, whether it came from the cache)."""
        if generic_query is not None:
            prefix, suffix, query_from = (
                generic_query["prefix"],
                generic_query["suffix"],
                generic_query["query_from"],
            )
        else:  # the request's own text, and the earlier media its layout holds
            prefix, suffix = layout.prefix_ids.tolist(), layout.suffix_ids.tolist()
            query_from = layout.query_from
        key = (
            tuple(context) if generic_query is None else (),
            tuple(grid),
            t_scale,
            settings.prune_layer,
            mask,
            query_from,
            tuple(prefix),
            tuple(suffix),
        )
        prior = self._sharp_prior_cache.get(key)
        if prior is not None:
            return prior, True
        if generic_query is not None:  # the layout is built only when the prior is computed
            prefix_ids, suffix_ids = (torch.tensor(ids, dtype=torch.long) for ids in (prefix, suffix))
            layout = self._layout(
                grid,
                item_positions,
                prefix_ids,
                suffix_ids,
                query_from,
                tail=layout.visual_tail,
                rows=layout.item_rows,
            )
        black = self._black_embedding(grid, fields["sharp_black_pixels"])
        prior = self._scoring_pass(settings.prune_layer, layout)(black, mask).scores
        self._sharp_prior_cache.put(key, prior)
        return prior, False

    def _black_embedding(self, grid, black_row: torch.Tensor) -> torch.Tensor:
        """The vision tower's embedding of an all-black video of this grid. # [N, D]

        Every family's tower attends within one temporal group at a time and gives it
        no temporal position, so all groups of a black video embed alike: one group is
        embedded (and cached by its size) and tiled over the T groups."""
        groups, height, width = (int(x) for x in grid)
        one_group = self._sharp_black_cache.get((height, width))
        if one_group is None:
            one_group = self._sharp_embed_black_video((1, height, width), black_row)
            self._sharp_black_cache.put((height, width), one_group)
        return one_group.repeat(groups, 1)

    # ---- positions --------------------------------------------------------------------
    def recompute_mrope_positions(
        self, input_ids, multimodal_embeddings, mrope_positions, num_computed_tokens
    ):
        decoded = [positions.decode(mm) for mm in multimodal_embeddings]
        new_positions, delta = positions.place_kept_positions(
            input_ids,
            [pos for _, pos in decoded],
            mrope_positions,
            num_computed_tokens,
            (media_token_id(self.config, "image"), media_token_id(self.config, "video")),
        )
        return [emb for emb, _ in decoded], new_positions, delta

    def get_mrope_input_positions(self, input_tokens, mm_features):
        lengths = {f.mm_position.offset: f.mm_position.length for f in mm_features}
        media = [
            (offset, lengths[offset], item_positions)
            for offset, item_positions in self._sharp_media_positions(mm_features)
        ]
        return positions.prompt_positions_with_pruned_media(len(input_tokens), media)


@dataclass
class _VideoPlan:
    """One video of an embed_multimodal call, between its planning and its selection."""

    visual: torch.Tensor  # [N, D] the vision tower's output: the tokens selection chooses from
    extra: torch.Tensor | None  # [e, D] rows the family appends, never pruned (or None)
    grid: Sequence[int]
    t_scale: float
    item_positions: torch.Tensor | None  # [R, 3]; None for families with 1-D positions
    fields: dict[str, Any]  # its rows of the processor's batched fields
    item: dict[str, Any] | None  # its item row (None: not a ShaRP item)
    settings: SharpSettings  # what selects its tokens
    # The scoring pass's settings and sequence, when one runs (for a profile item, the
    # discarded profile selection's).
    scoring_settings: SharpSettings | None = None
    layout: ItemLayout | None = None
    prescored: ScoringResult | None = None  # from the packed pass, when it ran in one
    shared_scoring_ms: float = 0.0  # that packed pass's wall time
    failure: Exception | None = None
    rows: ItemRows | None = None  # its text rows among the visual ones (Qwen3-VL), if any
    # For the report: "prior", "context_missing", "scored_with".
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def profiling(self) -> bool:
        return bool(self.item and self.item.get(PROFILE_KEY))

    @property
    def context(self) -> list[str]:
        """Cache hashes of the media items before this video in its prompt."""
        return self.item.get("context", []) if self.item else []


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


def nested_tensor_bytes(value) -> int:
    """Bytes of every tensor in a (nested) batch input: a family's video input, or a
    processor's output (whose field elements hold their tensor in `.data`)."""
    if isinstance(value, torch.Tensor):
        return value.nbytes
    if isinstance(value, dict):
        return sum(nested_tensor_bytes(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(nested_tensor_bytes(v) for v in value)
    return nested_tensor_bytes(value.data) if hasattr(value, "data") else 0


def _item_fields(fields: dict[str, Any], index: int) -> dict[str, Any]:
    """Row `index` of each batched field (a stacked tensor or a list of tensors)."""
    return {name: (value[index] if value is not None else None) for name, value in fields.items()}


def _sequence_positions(prefix: torch.Tensor, item_positions: torch.Tensor, num_suffix: int) -> torch.Tensor:
    """Positions of [prefix | video | suffix] as in the real prompt, given the prefix's
    own (# [3, P]: text from 0, media at their prompt positions). # [3, L] long"""
    start = int(prefix.max()) + 1 if prefix.numel() else 0
    video = item_positions.T + start
    after = int(video.max()) + 1 if video.numel() else start
    suffix = torch.arange(num_suffix).expand(3, -1) + after
    return torch.cat([prefix, video, suffix], dim=1)


def _report(
    settings, selection: Selection, scoring_ms, token_grid, fallback, notes, vision_cached
) -> dict[str, Any]:
    num_tokens, kept = selection.num_tokens, selection.kept
    return {
        "method": settings.method,
        "retention": settings.retention,
        "prune_layer": settings.prune_layer if settings.needs_scoring_pass else None,
        "num_tokens": num_tokens,
        "num_kept": int(kept.numel()),
        "scoring_ms": scoring_ms,
        "kept_indices": kept.tolist(),
        "token_grid": [int(v) for v in token_grid],
        # Unique per selection: the frontend tells a fresh selection from an
        # encoder-cache hit (which runs none) by whether it has seen this id before.
        "selection_id": uuid.uuid4().hex,
        "fallback": fallback,  # None, or why the selection fell back to uniform
        "prior": notes.get("prior"),  # None (no black prior), "computed", or "cached"
        # Earlier media items left out of the scoring pass (no longer held by the worker).
        "context_missing": notes.get("context_missing", 0),
        "vision_cached": vision_cached,  # the vision tower's output came from the content cache
        # How many videos' scoring passes ran as one packed pass (1: alone; 0: none ran).
        "scored_with": notes.get("scored_with", 1) if selection.scored else 0,
    }
