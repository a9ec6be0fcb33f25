"""What vLLM's memory profile must see of the plugin, so that the KV cache it sizes
leaves room for it. The scoring pass, the prior and the caches run outside vLLM's forward,
where the profiler would not otherwise see them.

vLLM's profile embeds dummy videos of the largest size the config allows. They never
prune (their placeholders are the maximum), and the processor marks them (item row
`profiling`); the model then runs a full ShaRP selection over them anyway (scoring pass,
packed with the call's other dummies as a real step's would be, black prior, dedup) and
discards it. With `sharp_max_video_tokens` set (the longest video this engine takes), it
also holds what such a video holds while it is selected."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from vllm.logger import init_logger

from sharp_plugin.core import SharpSettings

from .bounded_store import nested_tensor_bytes
from .scoring_layout import ItemLayout

if TYPE_CHECKING:
    from .model import SharpModelMixin
    from .video_selection import VideoPlan, VideoSelector

logger = init_logger(__name__)

# A typical question's length: the profile's query rows.
_PROFILE_QUERY_TOKENS = 64


class MemoryProfile:
    def __init__(self, model: SharpModelMixin, config):
        self.model = model
        # The longest video (unpruned visual tokens) this engine takes: the profile runs a
        # scoring pass of that size, and the processor refuses longer videos (unset: the
        # profile's own dummy videos, sized by the context, and no limit).
        self.max_video_tokens = int(getattr(config, "sharp_max_video_tokens", None) or 0)
        self.reserved_video_tokens = 0  # what the profile's largest scoring pass held

    def settings(self) -> SharpSettings:
        layers = len(self.model.sharp_decoder().layers)
        return SharpSettings(method="sharp", retention=0.5, prune_layer=min(2, layers - 1))

    def layout(self, grid, item_positions, appended, rows=None) -> ItemLayout:
        """No prompt before the video and a query as long as a typical question after it;
        the ids do not matter for memory."""
        prefix = torch.zeros(0, dtype=torch.long)
        suffix = torch.zeros(_PROFILE_QUERY_TOKENS, dtype=torch.long)
        return self.model.sharp_layout(
            grid, item_positions, prefix, suffix, query_from=1, appended=appended, rows=rows
        )

    def discarded_selection(self, selector: VideoSelector, plan: VideoPlan) -> None:
        selector.run_selection(plan, plan.scoring_settings)

    def longest_video(self, plan: VideoPlan, video_input, profiled_tokens: int) -> None:
        """When `sharp_max_video_tokens` is longer than the profile's dummy videos (they
        are sized by the context; a long video is not): hold what such a video holds in
        the worker while it is selected, and run its scoring pass. What it holds: its
        pixels (the dummy's bytes per token, scaled; they stay alive through the encoder
        step) and its tower output, the dummy's tiled to the length. Its tower runs in
        chunks (VisionTower), which the dummy already covers."""
        tokens = self.max_video_tokens
        unpruned = plan.visual.shape[0]
        self.reserved_video_tokens = max(unpruned, tokens)
        if tokens <= unpruned:
            return
        groups_in_dummy = int(plan.grid[0])
        _, rows, columns = self.model.sharp_token_grid(plan.grid)
        per_group = rows * columns
        groups = -(-tokens // per_group)
        grid = [groups, *(int(x) for x in plan.grid[1:])]
        visual = plan.visual.repeat(-(-groups // groups_in_dummy), 1)[: groups * per_group]
        pixels_per_token = nested_tensor_bytes(video_input) / max(profiled_tokens, 1)
        pixel_bytes = int(pixels_per_token * (visual.shape[0] - unpruned))
        pixels = torch.empty(pixel_bytes, dtype=torch.uint8, device=visual.device)
        settings = self.settings()
        layout = self.layout(grid, self.model.sharp_item_positions(grid, plan.t_scale), plan.appended)
        mask = settings.effective().segment_mask_for(visual.shape[0])
        self.model.sharp_scoring_pass(settings.prune_layer, layout)(visual, mask)
        del pixels
        logger.info(
            "ShaRP: the memory profile held a %d-token video's pixels and scoring pass "
            "(sharp_max_video_tokens).",
            visual.shape[0],
        )
