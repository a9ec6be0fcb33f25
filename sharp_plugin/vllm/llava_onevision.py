"""LLaVA-OneVision (and LLaVA-Video checkpoints in its Hugging Face format): only what
differs from other families.

- 1-D positions: vLLM gives the prompt's tokens consecutive positions, so the kept
  tokens of a video sit at consecutive positions after the text before it (see
  docs/method.md, "Families"). No position channels, no M-RoPE recomputation:
  this model is not `SupportsMultiModalPruning`, and vLLM's pruning path stays off.
- A video is its frames' pooled tokens (frames x pooled rows x pooled columns) plus
  one newline embedding after the last frame; selection chooses among the frame
  tokens, and the newline always follows the kept ones.
- The scoring pass's sequence is the unpruned prompt at positions 0..L-1, as the model
  would see it without pruning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from vllm.model_executor.models.llava_onevision import (
    LlavaOnevisionDummyInputsBuilder,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionMultiModalProcessor,
    LlavaOnevisionProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY

from .model import SharpModelMixin
from .processor import SharpProcessingInfoMixin, SharpProcessorMixin, device_normalization_kwargs
from .scoring_layout import MediaRows


def pooled_frame_side(config) -> int:
    """Pooled tokens per side of one frame (vLLM's `_get_num_frame_tokens`)."""
    patches = config.vision_config.image_size // config.vision_config.patch_size
    return math.ceil(patches / getattr(config, "spatial_pool_stride", 2))


# Frames averaged at a time when measuring a video's change (a float32 copy of 16 frames
# of 384 x 384 is 28 MB).
_MEANS_CHUNK_FRAMES = 16


class SharpLlavaOnevisionProcessingInfo(SharpProcessingInfoMixin, LlavaOnevisionProcessingInfo):
    pass


class SharpLlavaOnevisionMultiModalProcessor(SharpProcessorMixin, LlavaOnevisionMultiModalProcessor):
    def sharp_never_pruned_rows(self, item) -> int:
        return 1  # the newline after the video

    def sharp_video_token_counts(self, processed) -> list[int] | None:
        videos = processed.get("pixel_values_videos")
        if videos is None:
            return None
        per_frame = pooled_frame_side(self.info.get_hf_config()) ** 2
        return [len(video) * per_frame for video in videos]

    def sharp_token_means(self, processed, index: int) -> torch.Tensor:
        """A frame's pooled tokens cover equal squares of it; each token's 2 x 2 quarters
        are averaged (the pooled grid at twice its side), a run of frames at a time.
        # [frames, side * side, 4, C]"""
        video = processed["pixel_values_videos"][index]  # [frames, C, H, W]
        side = pooled_frame_side(self.info.get_hf_config())
        means = []
        for run in video.split(_MEANS_CHUNK_FRAMES):
            quarters = torch.nn.functional.adaptive_avg_pool2d(run.float(), 2 * side)  # [f, C, 2s, 2s]
            quarters = quarters.unflatten(2, (side, 2)).unflatten(4, (side, 2))  # [f, C, s, 2, s, 2]
            means.append(quarters.permute(0, 2, 4, 3, 5, 1).reshape(run.shape[0], side * side, 4, -1))
        return torch.cat(means)

    def sharp_num_images(self, processed) -> int:
        sizes = processed.get("image_sizes")
        return 0 if sizes is None else len(sizes)

    def sharp_black_pixels(self) -> torch.Tensor:
        """One all-black frame, as the video processor normalises it. # [C, H, W] float32"""
        video_processor = self.info.get_hf_processor().video_processor
        side = self.info.get_hf_config().vision_config.image_size
        frames = np.zeros((1, side, side, 3), dtype=np.uint8)
        out = video_processor(videos=[frames], return_tensors="pt", **device_normalization_kwargs(self.info))
        return out["pixel_values_videos"][0][0].float().contiguous()


@MULTIMODAL_REGISTRY.register_processor(
    SharpLlavaOnevisionMultiModalProcessor,
    info=SharpLlavaOnevisionProcessingInfo,
    dummy_inputs=LlavaOnevisionDummyInputsBuilder,
)
class SharpLlavaOnevisionForConditionalGeneration(SharpModelMixin, LlavaOnevisionForConditionalGeneration):
    def __init__(self, *, vllm_config, prefix: str = ""):
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self._sharp_init()

    def sharp_decoder(self) -> torch.nn.Module:
        return self.language_model.model

    def sharp_video_grids(self, video_input) -> list[list[int]]:
        side = pooled_frame_side(self.config)
        return [[len(video), side, side] for video in video_input["pixel_values_videos"]]

    def sharp_token_grid(self, grid) -> tuple[int, int, int]:
        return grid[0], grid[1], grid[2]  # a group is one frame

    def sharp_video_t_scale(self, video_input, index: int) -> float:
        return 1.0  # 1-D positions: time is not a position

    def sharp_video_subset(self, video_input, indices: Sequence[int]):
        videos = video_input["pixel_values_videos"]
        chosen = videos[list(indices)] if torch.is_tensor(videos) else [videos[i] for i in indices]
        return self._parse_and_validate_video_input(pixel_values_videos=chosen)

    def sharp_video_groups(self, video_input, index: int, groups: Sequence[int]):
        video = video_input["pixel_values_videos"][index]
        return self._parse_and_validate_video_input(pixel_values_videos=[video[list(groups)]])

    def sharp_embed_videos(self, video_input) -> list[torch.Tensor]:
        # The stock video path appends its newline row per call, so videos cannot be cut
        # into chunks around it: the chunking is inside, per run of frames (below).
        return list(self._process_video_input(video_input))

    def _process_video_input(self, video_input):
        return self._process_video_pixels(video_input)

    def _video_pixels_to_features(self, vision_tower, pixel_values: torch.Tensor) -> torch.Tensor:
        """The stock tower, projector and pooling over the frames, a run of frames at a
        time (`sharp_tower.chunk_patches`), so that a long video's tower activations stay
        bounded. Each frame is embedded alone (SigLIP per image, pooling per frame), so
        the output is the same."""
        frames, _, height, width = pixel_values.shape
        patch = self.config.vision_config.patch_size
        per_frame = (height // patch) * (width // patch)
        budget = self.sharp_tower.chunk_patches
        step = max(1, budget // per_frame) if budget else frames
        stock = super()._video_pixels_to_features  # bound here: a comprehension has no zero-arg super()
        if frames <= step:
            return stock(vision_tower, pixel_values)
        return torch.cat([stock(vision_tower, chunk) for chunk in pixel_values.split(step)])

    def sharp_split_video_output(self, embeddings: torch.Tensor):
        rows = embeddings.reshape(-1, embeddings.shape[-1])
        return rows[:-1], rows[-1:]

    def sharp_image_outputs(self, image_input):
        return [(emb, None) for emb in self._process_image_input(image_input)]

    def sharp_embed_black_video(self, grid: Sequence[int], black_row: torch.Tensor) -> torch.Tensor:
        frames = int(grid[0])
        pixels = black_row.to(device=self.image_newline.device, dtype=self.image_newline.dtype)
        features = self._video_pixels_to_features(
            self.vision_tower, pixels.unsqueeze(0).expand(frames, -1, -1, -1)
        )
        return features.reshape(-1, features.shape[-1])

    # ---- 1-D positions -----------------------------------------------------------------
    def sharp_item_positions(self, grid, t_scale: float) -> None:
        return None

    def sharp_video_rows(self, video_input, index, grid, t_scale) -> tuple[None, None]:
        return None, None

    def sharp_item_output(self, kept_visual, appended, item_positions, kept, rows):
        """The kept rows, then the rows the family appends (the newline)."""
        if appended is None:
            return kept_visual, kept
        return torch.cat([kept_visual, appended.to(kept_visual.dtype)]), kept

    def sharp_media_rows(self, encoded, item_positions, kept_rows) -> MediaRows:
        """Every row the item put in the prompt, at consecutive positions."""
        count = encoded.shape[0]
        return MediaRows(
            rows=encoded, positions=torch.arange(count).unsqueeze(1).expand(-1, 3), next_offset=count
        )

    def sharp_sequence_positions(self, prefix_positions, item_positions, num_item_rows, num_after):
        """The unpruned prompt's positions 0..L-1, as the model would see it unpruned."""
        return torch.arange(prefix_positions.shape[1] + num_item_rows + num_after)
