"""Qwen3-VL: only what differs from Qwen2.5-VL (qwen_family.py holds what they share).

- A video's rows interleave text with its visual tokens: per temporal group, its
  timestamp ("<0.6 seconds>"), `<|vision_start|>`, the group's tokens, `<|vision_end|>`.
  The text rows are never pruned. The pruned prompt holds one run of placeholders, k
  kept tokens plus every text row, each row embedded by the model (text rows as text)
  and carrying its unpruned M-RoPE position in the position channels, so that the kept
  tokens sit among their timestamps exactly where the unpruned prompt has them.
- Positions are stock Qwen3-VL's (each group placed after its timestamp text, time
  carried by the text), computed by vLLM's own `_get_mrope_input_positions`.
  Interleaved M-RoPE is the rotary module's business.
- Deepstack: the tower's output rows are [embedding | one feature per deepstack level];
  kept rows keep theirs (text rows get zeros), vLLM's `embed_input_ids` adds them after
  the first decoder layers, and the scoring pass adds them in the same place.
See docs/method.md, "Families".
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
from vllm.model_executor.models.qwen3_vl import (
    Qwen3VLDummyInputsBuilder,
    Qwen3VLForConditionalGeneration,
    Qwen3VLMultiModalProcessor,
    Qwen3VLProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import (
    MultiModalFeatureSpec,
    MultiModalFieldConfig,
    MultiModalFieldElem,
    MultiModalKwargsItem,
    PlaceholderRange,
)

from . import positions
from .model import SharpModelMixin, enable_pruning_path
from .processor import SharpProcessingInfoMixin, SharpProcessorMixin
from .qwen_family import QwenModelHooks, QwenProcessorHooks
from .scoring_layout import ItemRows


@lru_cache(maxsize=256)
def _video_row_ids(
    tokenizer,
    token_ids: tuple[int, int, int],
    merge: int,
    grid: tuple[int, ...],
    timestamps: tuple[float, ...],
) -> tuple[int, ...]:
    """Token ids of a video's unpruned rows, as stock Qwen3-VL's processor writes them.
    `token_ids`: (vision start, vision end, video pad)."""
    vision_start, vision_end, video_token = token_ids
    details = Qwen3VLMultiModalProcessor.get_video_repl(
        tokens_per_frame=[(grid[1] // merge) * (grid[2] // merge)] * grid[0],
        timestamps=list(timestamps),
        tokenizer=tokenizer,
        vision_start_token_id=vision_start,
        vision_end_token_id=vision_end,
        video_token_id=video_token,
    )
    return tuple(details.full)


def video_row_ids(config, tokenizer, grid: Sequence[int], timestamps: Sequence[float]) -> list[int]:
    token_ids = (config.vision_start_token_id, config.vision_end_token_id, config.video_token_id)
    merge = config.vision_config.spatial_merge_size
    key_grid, key_times = tuple(int(v) for v in grid), tuple(float(t) for t in timestamps)
    return list(_video_row_ids(tokenizer, token_ids, merge, key_grid, key_times))


def video_rows(
    config, tokenizer, grid: Sequence[int], timestamps: Sequence[float]
) -> tuple[torch.Tensor, ItemRows]:
    """(each unpruned row's M-RoPE offset # [R, 3] long, which rows are text). The
    positions are stock vLLM's for the unpruned rows."""
    grid = [int(v) for v in grid]
    ids = video_row_ids(config, tokenizer, grid, timestamps)
    feature = MultiModalFeatureSpec(
        data=MultiModalKwargsItem(
            {
                "video_grid_thw": MultiModalFieldElem(
                    data=torch.tensor(grid), field=MultiModalFieldConfig.batched("video").field
                )
            }
        ),
        modality="video",
        identifier="sharp-rows",
        mm_position=PlaceholderRange(offset=0, length=len(ids)),
    )
    table, _ = Qwen3VLForConditionalGeneration._get_mrope_input_positions(
        input_tokens=ids, mm_features=[feature], config=config
    )
    id_tensor = torch.tensor(ids, dtype=torch.long)
    is_visual = id_tensor == config.video_token_id
    # A group's rows run from its timestamp to its vision-end: count the ends before.
    ends = (id_tensor == config.vision_end_token_id).long()
    groups = torch.cumsum(ends, 0) - ends
    rows = ItemRows(
        visual_rows=is_visual.nonzero().flatten(),
        text_rows=(~is_visual).nonzero().flatten(),
        text_ids=id_tensor[~is_visual],
        groups=groups,
    )
    return table.T.contiguous().long(), rows


class SharpQwen3VLProcessingInfo(SharpProcessingInfoMixin, Qwen3VLProcessingInfo):
    pass


class SharpQwen3VLMultiModalProcessor(QwenProcessorHooks, SharpProcessorMixin, Qwen3VLMultiModalProcessor):
    def sharp_never_pruned_rows(self, item) -> int:
        """The video's timestamp text and vision-start/end rows, one set per group."""
        grid, timestamps = item["video_grid_thw"].data.tolist(), item["timestamps"].data
        ids = video_row_ids(self.info.get_hf_config(), self.info.get_tokenizer(), grid, timestamps)
        video_token = self.info.sharp_video_token_id
        return sum(1 for token in ids if token != video_token)


@MULTIMODAL_REGISTRY.register_processor(
    SharpQwen3VLMultiModalProcessor,
    info=SharpQwen3VLProcessingInfo,
    dummy_inputs=Qwen3VLDummyInputsBuilder,
)
class SharpQwen3VLForConditionalGeneration(QwenModelHooks, SharpModelMixin, Qwen3VLForConditionalGeneration):
    def __init__(self, *, vllm_config, prefix: str = "model"):
        enable_pruning_path(vllm_config)
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self._sharp_init()

    def sharp_video_t_scale(self, video_input, index: int) -> float:
        return 1.0  # time is the timestamp text between groups, not a position

    def sharp_video_rows(self, video_input, index, grid, t_scale):
        return video_rows(self.config, self._tokenizer, grid, video_input["timestamps"][index])

    def sharp_media_positions(self, mm_features) -> list[tuple[int, np.ndarray]]:
        merge = self.config.vision_config.spatial_merge_size
        media = []
        for feature in sorted(mm_features, key=lambda f: f.mm_position.offset):
            if feature.modality == "image":
                _, h, w = feature.data["image_grid_thw"].data.tolist()
                item_positions = positions.grid_positions(1, h // merge, w // merge, 1.0)
            else:
                grid = feature.data["video_grid_thw"].data.tolist()
                timestamps = feature.data["timestamps"].data
                item_positions = video_rows(self.config, self._tokenizer, grid, timestamps)[0].T.numpy()
            media.append((feature.mm_position.offset, item_positions))
        return media
