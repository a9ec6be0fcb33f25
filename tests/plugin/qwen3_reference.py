"""An independent reference for Qwen3-VL: the same checkpoint loaded with HF
transformers (eager attention, fp32), driven by sharp_plugin.core outside vLLM.

Nothing here comes from sharp_plugin.vllm. Written from docs/method.md ("Families",
Qwen3-VL): the HF processor writes the unpruned prompt (each temporal group after its
timestamp text, between vision-start and vision-end) and HF's `get_rope_index` gives
its positions. The scoring pass runs over that prompt with the video's visual rows
(and their deepstack features) in place; a segment is whole groups with their text
rows; the query is the text after the video's closing vision-end. The pruned prompt
keeps every text row and the kept visual rows, each at its unpruned position."""

from __future__ import annotations

import numpy as np
import torch

from sharp_plugin.core import ScoringResult
from sharp_plugin.core.masks import SegmentMask


class Qwen3Reference:
    def __init__(self, model_dir):
        from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.model = Qwen3VLForConditionalGeneration.from_pretrained(
            model_dir, dtype=torch.float32, attn_implementation="eager"
        ).eval()
        self.config = self.model.config
        self.width = self.config.text_config.hidden_size

    @torch.inference_mode()
    def process(self, prompt: str, frames: np.ndarray, metadata: dict):
        from transformers.video_utils import VideoMetadata

        meta = VideoMetadata(**{k: v for k, v in metadata.items() if k != "do_sample_frames"})
        return self.processor(
            text=[prompt], videos=[frames], video_metadata=[meta], do_sample_frames=False, return_tensors="pt"
        )

    @torch.inference_mode()
    def video_rows(self, processed) -> torch.Tensor:
        """The tower's rows [N, D * (1 + levels)]: embedding, then each deepstack level."""
        out = self.model.model.get_video_features(
            processed["pixel_values_videos"], processed["video_grid_thw"], return_dict=True
        )
        main = torch.cat(out.pooler_output)
        deep = [torch.cat(level) for level in out.deepstack_features]
        return torch.cat([main, *deep], dim=-1)

    def prepare(self, prompt, frames, metadata):
        """(unpruned prompt ids [L], their positions [3, L], visual rows, black rows)."""
        processed = self.process(prompt, frames, metadata)
        ids = processed["input_ids"][0]
        position_ids, _ = self.model.model.get_rope_index(
            processed["input_ids"], processed["mm_token_type_ids"], video_grid_thw=processed["video_grid_thw"]
        )
        black = self.video_rows(self.process(prompt, np.zeros_like(frames), metadata))
        return ids, position_ids[:, 0], self.video_rows(processed), black

    def scoring_pass(self, ids, positions, prune_layer):
        return _ScoringPass(self, ids, positions, prune_layer)

    @torch.inference_mode()
    def forward(self, ids, positions, visual_at, visual, mask=None):
        """HF's text model over `ids` with `visual` [n, D(1+levels)] written at the rows
        `visual_at` (bool [L]) and their deepstack features added after the first layers."""
        lm = self.model.model.language_model
        x = lm.embed_tokens(ids).clone()
        x[visual_at] = visual[:, : self.width]
        deep = list(visual[:, self.width :].split(self.width, dim=-1))
        return lm(
            inputs_embeds=x[None],
            position_ids=positions[:, None],
            visual_pos_masks=visual_at[None],
            deepstack_visual_embeds=deep,
            attention_mask=mask,
            output_attentions=mask is not None,
        )

    @torch.inference_mode()
    def prompt_logprobs(self, ids, positions, visual, kept, served_ids):
        """Log-prob of each served prompt token given the ones before it, from HF's
        forward over the pruned prompt: the unpruned prompt without the visual rows that
        were not kept, every row at its unpruned position. # [L' - 1] float32"""
        video = ids == self.config.video_token_id
        keep = torch.ones_like(video)
        keep[video.nonzero().flatten()] = False
        keep[video.nonzero().flatten()[kept]] = True
        out = self.forward(ids[keep], positions[:, keep], video[keep], visual[kept])
        logprobs = self.model.lm_head(out.last_hidden_state[0]).log_softmax(dim=-1)
        served = torch.tensor(served_ids)
        assert served.numel() == int(keep.sum()), "the served prompt has one row per kept row"
        return logprobs[:-1].gather(1, served[1:, None])[:, 0]


class _ScoringPass:
    def __init__(self, reference, ids, positions, prune_layer):
        self.reference, self.ids, self.positions, self.prune_layer = reference, ids, positions, prune_layer
        config = reference.config
        self.video = ids == config.video_token_id
        rows = self.video.nonzero().flatten()
        # The item runs from the first timestamp, right after the video's own opening
        # vision-start (the one before the first group's), to the last group's vision-end.
        first_group_start = int(rows[0]) - 1
        opening = (ids[:first_group_start] == config.vision_start_token_id).nonzero().flatten()[-1]
        self.first = int(opening) + 1
        self.last = int(rows[-1]) + 1
        item = ids[self.first : self.last + 1]
        ends = (item == config.vision_end_token_id).long()
        self.groups = torch.cumsum(ends, 0) - ends  # each item row's temporal group
        self.query_from = self.last + 2  # after the closing vision-end

    def mask(self, mask: SegmentMask) -> torch.Tensor:
        length = len(self.ids)
        i = torch.arange(length)[:, None]
        j = torch.arange(length)[None, :]
        allowed = j <= i
        if mask.groups:
            segment = torch.full((length,), -1)
            segment[self.first : self.last + 1] = self.groups // mask.groups
            in_item_i, in_item_j = segment[:, None] >= 0, segment[None, :] >= 0
            same = segment[:, None] == segment[None, :]
            allowed = allowed | (same & in_item_i)
            if mask.local:  # no other segment: the prefix and its own only
                allowed = allowed & ~(in_item_i & in_item_j & ~same)
        additive = torch.zeros(length, length)
        additive[~allowed] = torch.finfo(torch.float32).min
        return additive[None, None]

    @torch.inference_mode()
    def __call__(self, visual: torch.Tensor, mask: SegmentMask) -> ScoringResult:
        entering = {}

        def capture(module, args, kwargs):  # layer K's input: deepstack already added
            entering["hidden"] = args[0] if args else kwargs["hidden_states"]

        layer = self.reference.model.model.language_model.layers[self.prune_layer]
        handle = layer.register_forward_pre_hook(capture, with_kwargs=True)
        try:
            out = self.reference.forward(self.ids, self.positions, self.video, visual, mask=self.mask(mask))
        finally:
            handle.remove()
        probs = out.attentions[self.prune_layer][0]  # [H, L, L]
        scores = probs[:, self.query_from :][:, :, self.video].mean(dim=(0, 1))
        return ScoringResult(scores, entering["hidden"][0, self.video])
