"""Qwen2.5-VL: only what differs from other families."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from vllm.model_executor.models.qwen2_5_vl import (
    Qwen2_5_VLDummyInputsBuilder,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLMultiModalProcessor,
    Qwen2_5_VLProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY

from .model import SharpModelMixin, enable_pruning_path
from .processor import SharpProcessingInfoMixin, SharpProcessorMixin


class SharpQwen2_5_VLProcessingInfo(SharpProcessingInfoMixin, Qwen2_5_VLProcessingInfo):
    pass


class SharpQwen2_5_VLMultiModalProcessor(SharpProcessorMixin, Qwen2_5_VLMultiModalProcessor):
    pass


@MULTIMODAL_REGISTRY.register_processor(
    SharpQwen2_5_VLMultiModalProcessor,
    info=SharpQwen2_5_VLProcessingInfo,
    dummy_inputs=Qwen2_5_VLDummyInputsBuilder,
)
class SharpQwen2_5_VLForConditionalGeneration(SharpModelMixin, Qwen2_5_VLForConditionalGeneration):
    def __init__(self, *, vllm_config, prefix: str = ""):
        enable_pruning_path(vllm_config)
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self._sharp_init()

    def _sharp_decoder(self) -> torch.nn.Module:
        return self.language_model.model

    def _sharp_spatial_merge_size(self) -> int:
        return self.visual.spatial_merge_size

    def _sharp_video_t_scale(self, video_input, index: int) -> float:
        seconds = video_input.get("second_per_grid_ts")
        per_grid = float(seconds[index]) if seconds is not None else 1.0
        return per_grid * self.config.vision_config.tokens_per_second

    def _sharp_embed_black_video(self, grid_thw: Sequence[int], black_row: torch.Tensor) -> torch.Tensor:
        num_patches = int(grid_thw[0] * grid_thw[1] * grid_thw[2])
        pixels = black_row.to(device=self.visual.device, dtype=self.visual.dtype)
        pixels = pixels.unsqueeze(0).expand(num_patches, -1).contiguous()
        return self.visual(pixels, grid_thw=[list(grid_thw)])

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
