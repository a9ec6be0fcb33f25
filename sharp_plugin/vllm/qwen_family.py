"""What Qwen2.5-VL and Qwen3-VL share: M-RoPE positions, a tower that reads
`*_grid_thw` grids of unmerged patches with `temporal_patch_size` frames to a group, and
the processor's merged-patch token counts. Each family file adds what differs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from . import positions
from .family import SharpMropeFamily, SharpProcessorFamily, media_token_id
from .scoring_layout import ItemRows, MediaRows

_CHANNELS = 3
# Patches averaged at a time when measuring a video's change: a float32 copy of 16k
# patches of 1,176 values is 77 MB.
_MEANS_CHUNK_PATCHES = 1 << 14


class QwenProcessorHooks(SharpProcessorFamily):
    """Processor hooks of the Qwen-VL families: grids of merged patches."""

    def sharp_video_token_counts(self, processed) -> list[int] | None:
        grid = processed.get("video_grid_thw")
        if grid is None:
            return None
        merge = self.info.get_hf_config().vision_config.spatial_merge_size
        return (grid.prod(-1) // (merge * merge)).tolist()

    def sharp_token_means(self, processed, index: int) -> torch.Tensor:
        """Rows of `pixel_values_videos` are patches in (group, merged row, merged column,
        2 x 2 sub-patch) order, each [C, temporal_patch, P, P]: a token is 4 rows in a
        row, and each patch's mean is one of its token's 4 means. Averaged a run of groups
        at a time, so a long video's float copy stays small."""
        grids = processed["video_grid_thw"]
        sizes = grids.prod(-1).tolist()
        start = sum(sizes[:index])
        groups, height, width = grids[index].tolist()
        merge = self.info.get_hf_config().vision_config.spatial_merge_size
        pixels = processed["pixel_values_videos"][start : start + sizes[index]]
        per_group, tokens = height * width, (height // merge) * (width // merge)
        step = max(1, _MEANS_CHUNK_PATCHES // per_group)
        means = []
        for first in range(0, groups, step):
            run = pixels[first * per_group : min(groups, first + step) * per_group]
            run = run.reshape(-1, tokens, merge * merge, _CHANNELS, run.shape[-1] // _CHANNELS)
            means.append(run.float().mean(dim=4))  # [groups, tokens, patches, C]
        return torch.cat(means)

    def sharp_num_images(self, processed) -> int:
        grid = processed.get("image_grid_thw")
        return 0 if grid is None else len(grid)

    def sharp_black_pixels(self) -> torch.Tensor:
        """One patch row of an all-black video, as this model's video processor prepares a
        request's (normalised here, or left to the device). # [C * T * P * P] float32"""
        from .processor import device_normalization_kwargs

        video_processor = self.info.get_hf_processor().video_processor
        size = video_processor.patch_size * video_processor.merge_size
        frames = np.zeros((video_processor.temporal_patch_size, size, size, 3), dtype=np.uint8)
        out = video_processor(
            videos=[frames],
            do_sample_frames=False,
            return_tensors="pt",
            **device_normalization_kwargs(self.info),
        )
        return out["pixel_values_videos"][0].float().contiguous()


class QwenModelHooks(SharpMropeFamily):
    """Model hooks of the Qwen-VL families: `visual` is the tower, grids are rows of
    `*_grid_thw`, a temporal group is `temporal_patch_size` frames, positions are M-RoPE."""

    def sharp_decoder(self) -> torch.nn.Module:
        return self.language_model.model

    def sharp_video_grids(self, video_input) -> list[list[int]]:
        return video_input["video_grid_thw"].tolist()

    def sharp_token_grid(self, grid) -> tuple[int, int, int]:
        merge = self.visual.spatial_merge_size
        return grid[0], grid[1] // merge, grid[2] // merge

    def sharp_item_positions(self, grid, t_scale: float) -> torch.Tensor:
        return positions.media_positions(grid, self.visual.spatial_merge_size, t_scale)

    def sharp_image_outputs(self, image_input) -> list[tuple[torch.Tensor, torch.Tensor]]:
        grids = image_input["image_grid_thw"].tolist()
        embeddings = self._process_image_input(image_input)
        merge = self.visual.spatial_merge_size
        return [
            (emb, positions.media_positions(grid, merge, 1.0))
            for emb, grid in zip(embeddings, grids, strict=True)
        ]

    def sharp_split_video_output(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, None]:
        return embeddings, None

    def sharp_embed_black_video(self, grid: Sequence[int], black_row: torch.Tensor) -> torch.Tensor:
        num_patches = int(grid[0] * grid[1] * grid[2])
        pixels = black_row.to(device=self.visual.device, dtype=self.visual.dtype)
        pixels = pixels.unsqueeze(0).expand(num_patches, -1).contiguous()
        return self.visual(pixels, grid_thw=[list(grid)])

    def sharp_embed_videos(self, video_input) -> list[torch.Tensor]:
        """The videos of at most one chunk together in one tower call, and each longer
        video a run of whole temporal groups at a time (the tower attends within a group:
        `cu_seqlens` per group, windows inside it)."""
        chunk_patches = self.sharp_tower.chunk_patches
        if video_input["type"] != "pixel_values_videos":  # precomputed embeddings: no tower
            return list(self._process_video_input(video_input))
        sizes = video_input["video_grid_thw"].prod(-1).tolist()
        if not chunk_patches or max(sizes) <= chunk_patches:
            return list(self._process_video_input(video_input))
        outputs: list[torch.Tensor | None] = [None] * len(sizes)
        short = [index for index, size in enumerate(sizes) if size <= chunk_patches]
        if short:
            together = self._process_video_input(self.sharp_video_subset(video_input, short))
            for index, emb in zip(short, together, strict=True):
                outputs[index] = emb
        for index in (index for index, size in enumerate(sizes) if size > chunk_patches):
            video = self.sharp_video_subset(video_input, [index])
            chunks = _group_chunks(video, chunk_patches)
            outputs[index] = torch.cat([self._process_video_input(chunk)[0] for chunk in chunks])
        return outputs

    def sharp_video_groups(self, video_input, index: int, groups: Sequence[int]):
        video = self.sharp_video_subset(video_input, [index])
        _, height, width = video["video_grid_thw"][0].tolist()
        per_group = height * width
        pixels = video["pixel_values_videos"]
        rows = pixels.view(-1, per_group, pixels.shape[-1])
        # The tower reads only pixels and grid; the per-video fields ride along unchanged.
        extra = {name: video.get(name) for name in ("second_per_grid_ts", "timestamps")}
        return type(video)(
            type=video["type"],
            pixel_values_videos=rows[list(groups)].flatten(0, 1),
            video_grid_thw=video["video_grid_thw"].new_tensor([[len(groups), height, width]]),
            **{name: value for name, value in extra.items() if value is not None},
        )

    def sharp_video_subset(self, video_input, indices: Sequence[int]):
        grid = video_input["video_grid_thw"]
        if video_input["type"] == "video_embeds":  # rows are merged tokens
            name, rows = "video_embeds", grid.prod(-1) // self.visual.spatial_merge_size**2
        else:  # rows are patches
            name, rows = "pixel_values_videos", grid.prod(-1)
        pieces = video_input[name].split(rows.tolist())
        chosen = {
            "type": video_input["type"],
            name: torch.cat([pieces[index] for index in indices]),
            "video_grid_thw": grid[list(indices)],
        }
        for name in ("second_per_grid_ts", "timestamps"):  # per video, when present
            values = video_input.get(name)
            if values is not None:
                chosen[name] = (
                    values[list(indices)] if torch.is_tensor(values) else [values[i] for i in indices]
                )
        return type(video_input)(**chosen)

    # ---- M-RoPE positions ------------------------------------------------------------------
    def sharp_item_output(self, kept_visual, appended, item_positions, kept, rows: ItemRows | None):
        """The kept rows with their M-RoPE positions in extra channels (positions.py); a
        video with text rows among its visual ones (Qwen3-VL) puts every text row in
        too, in row order, embedded as text with no deepstack features."""
        if rows is None:
            return positions.with_position_channels(kept_visual, item_positions, kept), kept
        device = kept_visual.device
        candidates = torch.cat([rows.text_rows, rows.visual_rows[kept.cpu()]])  # item rows
        order = candidates.argsort()
        text = self.sharp_decoder().embed_input_ids(rows.text_ids.to(device, non_blocking=True))
        text_rows = kept_visual.new_zeros(text.shape[0], kept_visual.shape[-1])  # deepstack channels: zeros
        text_rows[:, : text.shape[-1]] = text.to(kept_visual.dtype)
        content = torch.cat([text_rows, kept_visual])
        kept_rows = candidates[order]
        ordered = content[order.to(device, non_blocking=True)]
        return positions.with_position_channels(ordered, item_positions, kept_rows), kept_rows

    def sharp_media_rows(self, encoded, item_positions, kept_rows) -> MediaRows:
        """The output's embedding columns, as a view (nothing gathered or copied again)."""
        return MediaRows(
            rows=encoded[:, : -positions.NUM_CHANNELS],
            positions=item_positions[kept_rows],
            next_offset=positions.next_text_offset(item_positions),
        )

    def sharp_sequence_positions(self, prefix_positions, item_positions, num_item_rows, num_after):
        """[prefix | video | after] as in the real prompt: the video from the prefix's last
        position + 1, the text after it from the video's whole grid's max + 1."""
        start = int(prefix_positions.max()) + 1 if prefix_positions.numel() else 0
        video = item_positions.T + start
        after = int(video.max()) + 1 if video.numel() else start
        return torch.cat([prefix_positions, video, torch.arange(num_after).expand(3, -1) + after], dim=1)

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
            for offset, item_positions in self.sharp_media_positions(mm_features)
        ]
        return positions.prompt_positions_with_pruned_media(len(input_tokens), media)


def _group_chunks(video_input, budget: int):
    """One video's input split into runs of whole temporal groups of at most `budget`
    patches each (at least one group)."""
    groups, height, width = video_input["video_grid_thw"][0].tolist()
    per_group = height * width  # patch rows per temporal group
    step = max(1, budget // per_group)
    pixels = video_input["pixel_values_videos"]
    # The tower reads only pixels and grid; the per-video fields ride along unchanged.
    extra = {name: video_input.get(name) for name in ("second_per_grid_ts", "timestamps")}
    for first in range(0, groups, step):
        count = min(step, groups - first)
        yield type(video_input)(
            type=video_input["type"],
            pixel_values_videos=pixels[first * per_group : (first + count) * per_group],
            video_grid_thw=video_input["video_grid_thw"].new_tensor([[count, height, width]]),
            **{name: value for name, value in extra.items() if value is not None},
        )
