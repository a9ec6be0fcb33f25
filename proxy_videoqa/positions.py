"""The M-RoPE position ids vLLM gives a one-video Qwen2.5-VL prompt, for training.

Training must see the positions serving uses. Two differences from transformers:
- transformers 5.19 builds 3-D positions only when `mm_token_type_ids` is passed and
  otherwise silently falls back to 1-D positions;
- after a video, transformers continues text at the last position + max(h, w) grid,
  while vLLM continues at max(all earlier positions) + 1, which includes the temporal
  axis (here 31 against 20).
tests/proxy checks these against vLLM's own `get_mrope_input_positions`.
"""

from __future__ import annotations

import torch

from .geometry import CELLS, GRID_T, SECONDS_PER_GROUP, TOKENS_PER_SECOND, VIDEO_TOKENS


def vllm_mrope_positions(input_ids: list[int], video_token_id: int) -> torch.Tensor:
    """[3, L] positions (t, h, w) for one prompt holding one clip's video tokens."""
    start = input_ids.index(video_token_id)
    end = start + VIDEO_TOKENS
    if input_ids[start:end].count(video_token_id) != VIDEO_TOKENS:
        raise ValueError(f"expected {VIDEO_TOKENS} consecutive video tokens")
    step = int(TOKENS_PER_SECOND * SECONDS_PER_GROUP)
    t, h, w = torch.meshgrid(
        torch.arange(GRID_T) * step, torch.arange(CELLS), torch.arange(CELLS), indexing="ij"
    )
    video = torch.stack([t, h, w]).reshape(3, -1) + start
    before = torch.arange(start).expand(3, -1)
    after = torch.arange(len(input_ids) - end).expand(3, -1) + video.max() + 1
    return torch.cat([before, video, after], dim=1)
