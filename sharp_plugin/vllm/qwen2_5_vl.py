"""Qwen2.5-VL: only what differs from Qwen3-VL (qwen_family.py holds what they share).
A video's prompt rows are its visual tokens alone, and time is a position: a temporal
group's M-RoPE t is its index scaled by seconds per group and `tokens_per_second`."""

from __future__ import annotations

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
from .processor import SharpProcessingInfoMixin, SharpProcessorMixin
from .qwen_family import QwenModelHooks, QwenProcessorHooks


class SharpQwen2_5_VLProcessingInfo(SharpProcessingInfoMixin, Qwen2_5_VLProcessingInfo):
    pass


class SharpQwen2_5_VLMultiModalProcessor(
    QwenProcessorHooks, SharpProcessorMixin, Qwen2_5_VLMultiModalProcessor
):
    def sharp_never_pruned_rows(self, item) -> int:
        return 0


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

    def sharp_video_t_scale(self, video_input, index: int) -> float:
        seconds = video_input.get("second_per_grid_ts")
        per_grid = float(seconds[index]) if seconds is not None else 1.0
        return per_grid * self.config.vision_config.tokens_per_second

    def sharp_video_rows(self, video_input, index, grid, t_scale) -> tuple[torch.Tensor, None]:
        return self.sharp_item_positions(grid, t_scale), None

    def sharp_media_positions(self, mm_features) -> list[tuple[int, np.ndarray]]:
        return [
            (offset, positions.grid_positions(t, h, w, t_scale))
            for offset, t, h, w, t_scale in self.iter_mm_grid_thw(mm_features)  # sorted by offset
        ]
