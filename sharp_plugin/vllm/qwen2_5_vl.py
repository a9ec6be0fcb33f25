"""Qwen2.5-VL: only what differs from other families. Qwen3-VL reads its videos and
images the same way, so those hooks are mixins it shares (`QwenProcessorHooks`,
`QwenModelHooks`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from vllm.model_executor.models.qwen2_5_vl import (
    Qwen2_5_VLDummyInputsBuilder,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLMultiModalProcessor,
    Qwen2_5_VLProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY

from . import positions
from .model import SharpModelMixin, enable_pruning_path
from .processor import SharpProcessingInfoMixin, SharpProcessorMixin, device_normalization_kwargs


class QwenProcessorHooks:
    """Processor hooks of the Qwen-VL families: grids of merged patches."""

    def _sharp_video_token_counts(self, processed) -> list[int] | None:
        grid = processed.get("video_grid_thw")
        if grid is None:
            return None
        merge = self.info.get_hf_config().vision_config.spatial_merge_size
        return (grid.prod(-1) // (merge * merge)).tolist()

    def _sharp_num_images(self, processed) -> int:
        grid = processed.get("image_grid_thw")
        return 0 if grid is None else len(grid)

    def _sharp_black_pixels(self) -> torch.Tensor:
        """One patch row of an all-black video, as this model's video processor
        prepares a request's (normalised here, or left to the device). # [C * T * P * P]
        float32"""
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


class QwenModelHooks:
    """Model hooks of the Qwen-VL families: `visual` is the tower, grids are rows of
    `*_grid_thw`, a temporal group is `temporal_patch_size` frames."""

    def _sharp_decoder(self) -> torch.nn.Module:
        return self.language_model.model

    def _sharp_video_grids(self, video_input) -> list[list[int]]:
        return video_input["video_grid_thw"].tolist()

    def _sharp_token_grid(self, grid) -> tuple[int, int, int]:
        merge = self.visual.spatial_merge_size
        return grid[0], grid[1] // merge, grid[2] // merge

    def _sharp_item_positions(self, grid, t_scale: float) -> torch.Tensor:
        return positions.media_positions(grid, self.visual.spatial_merge_size, t_scale)

    def _sharp_image_outputs(self, image_input) -> list[tuple[torch.Tensor, torch.Tensor]]:
        grids = image_input["image_grid_thw"].tolist()
        embeddings = self._process_image_input(image_input)
        merge = self.visual.spatial_merge_size
        return [
            (emb, positions.media_positions(grid, merge, 1.0))
            for emb, grid in zip(embeddings, grids, strict=True)
        ]

    def _sharp_embed_black_video(self, grid_thw: Sequence[int], black_row: torch.Tensor) -> torch.Tensor:
        num_patches = int(grid_thw[0] * grid_thw[1] * grid_thw[2])
        pixels = black_row.to(device=self.visual.device, dtype=self.visual.dtype)
        pixels = pixels.unsqueeze(0).expand(num_patches, -1).contiguous()
        return self.visual(pixels, grid_thw=[list(grid_thw)])

    def _sharp_video_patches(self, video_input) -> list[int] | None:
        if video_input["type"] != "pixel_values_videos":
            return None  # precomputed embeddings: no tower to run
        return video_input["video_grid_thw"].prod(-1).tolist()

    def _sharp_video_chunks(self, video_input, budget: int):
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

    def _sharp_video_subset(self, video_input, indices: Sequence[int]):
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


class SharpQwen2_5_VLProcessingInfo(SharpProcessingInfoMixin, Qwen2_5_VLProcessingInfo):
    pass


class SharpQwen2_5_VLMultiModalProcessor(
    QwenProcessorHooks, SharpProcessorMixin, Qwen2_5_VLMultiModalProcessor
):
    pass


@MULTIMODAL_REGISTRY.register_processor(
    SharpQwen2_5_VLMultiModalProcessor,
    info=SharpQwen2_5_VLProcessingInfo,
    dummy_inputs=Qwen2_5_VLDummyInputsBuilder,
)
class SharpQwen2_5_VLForConditionalGeneration(
    QwenModelHooks, SharpModelMixin, Qwen2_5_VLForConditionalGeneration
):
    def __init__(self, *, vllm_config, prefix: str = ""):
        enable_pruning_path(vllm_config)
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self._sharp_init()

    def _sharp_video_t_scale(self, video_input, index: int) -> float:
        seconds = video_input.get("second_per_grid_ts")
        per_grid = float(seconds[index]) if seconds is not None else 1.0
        return per_grid * self.config.vision_config.tokens_per_second
