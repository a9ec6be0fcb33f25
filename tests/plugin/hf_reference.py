"""An independent reference for the scoring pass: the same checkpoint loaded with HF
transformers (eager attention, fp32), driven by sharp_plugin.core outside vLLM.

Nothing here comes from sharp_plugin.vllm: the positions, the segment mask and the
scores are written out again from the method's definition (docs/method.md)."""

from __future__ import annotations

import numpy as np
import torch

from sharp_plugin.core import ScoringResult
from sharp_plugin.core.masks import SegmentMask


class HFReference:
    def __init__(self, model_dir):
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            model_dir, dtype=torch.float32, attn_implementation="eager"
        ).eval()
        self.config = self.model.config

    @torch.inference_mode()
    def video_features(self, pixel_values, grid_thw) -> torch.Tensor:
        return self.model.model.get_video_features(pixel_values, grid_thw).pooler_output[0]

    def prepare(self, prompt: str, frames: np.ndarray, fps: float):
        from transformers.video_utils import VideoMetadata

        tokenizer = self.processor.tokenizer
        ids = tokenizer(prompt)["input_ids"]
        at = ids.index(self.config.video_token_id)
        metadata = VideoMetadata(
            total_num_frames=len(frames), fps=fps, duration=len(frames) / fps,
            video_backend="opencv", frames_indices=list(range(len(frames))),
        )  # fmt: skip

        def process(video):
            return self.processor(
                text=[prompt],
                videos=[video],
                video_metadata=[metadata],
                do_sample_frames=False,
                return_tensors="pt",
            )

        out = process(frames)
        grid = out["video_grid_thw"]
        visual = self.video_features(out["pixel_values_videos"], grid)
        black_visual = self.video_features(process(np.zeros_like(frames))["pixel_values_videos"], grid)
        t_scale = float(out["second_per_grid_ts"][0]) * self.config.vision_config.tokens_per_second
        prefix, suffix = ids[:at], _with_query_after_video(ids[:at], ids[at + 1 :], tokenizer)
        return prefix, suffix, grid[0].tolist(), t_scale, visual, black_visual

    @torch.inference_mode()
    def prompt_logprobs(self, prompt_ids, num_prefix, visual, kept, grid, t_scale) -> torch.Tensor:
        """Log-prob of each prompt token given the ones before it, from a plain HF forward
        over a pruned prompt: the kept visual tokens in their placeholder rows, each at
        its original M-RoPE position, and the text after the video where it stands in the
        unpruned prompt (the video's max position + 1). # [L - 1] float32"""
        num_visual = visual.shape[0]
        num_suffix = len(prompt_ids) - num_prefix - len(kept)
        full = _HFScoringPass(self.model, self.config, [0] * num_prefix, [0] * num_suffix, grid, t_scale, 0)
        unpruned = full.positions()  # [3, P + N + S]
        columns = torch.cat(
            [torch.arange(num_prefix), num_prefix + kept, torch.arange(num_suffix) + num_prefix + num_visual]
        )
        ids = torch.tensor(prompt_ids)
        lm = self.model.model.language_model
        x = lm.embed_tokens(ids)
        x[num_prefix : num_prefix + len(kept)] = visual[kept]
        hidden = lm(inputs_embeds=x[None], position_ids=unpruned[:, columns][:, None, :]).last_hidden_state
        logprobs = self.model.lm_head(hidden[0]).log_softmax(dim=-1)  # [L, V]
        return logprobs[:-1].gather(1, ids[1:, None])[:, 0]

    def scoring_pass(self, prefix, suffix, grid, t_scale, prune_layer):
        return _HFScoringPass(self.model, self.config, prefix, suffix, grid, t_scale, prune_layer)


class _HFScoringPass:
    def __init__(self, model, config, prefix, suffix, grid, t_scale, prune_layer):
        self.model, self.config = model, config
        self.prefix, self.suffix = torch.tensor(prefix), torch.tensor(suffix)
        merge = config.vision_config.spatial_merge_size
        self.t, self.h, self.w = grid[0], grid[1] // merge, grid[2] // merge
        self.t_scale, self.prune_layer = t_scale, prune_layer

    def positions(self) -> torch.Tensor:
        p, s = len(self.prefix), len(self.suffix)
        t, h, w = np.meshgrid(np.arange(self.t), np.arange(self.h), np.arange(self.w), indexing="ij")
        t = (t * self.t_scale).astype(np.int64)
        video = np.stack([t.ravel(), h.ravel(), w.ravel()]) + p
        rows = [np.tile(np.arange(p), (3, 1)), video, np.tile(np.arange(s), (3, 1)) + video.max() + 1]
        return torch.from_numpy(np.concatenate(rows, axis=1))

    def mask(self, num_visual: int, segment: SegmentMask) -> torch.Tensor:
        p, s = len(self.prefix), len(self.suffix)
        length = p + num_visual + s
        i = torch.arange(length)[:, None]
        j = torch.arange(length)[None, :]
        allowed = j <= i
        if segment.groups:
            per_segment = segment.groups * self.h * self.w
            visual_i = (i >= p) & (i < p + num_visual)
            visual_j = (j >= p) & (j < p + num_visual)
            same = ((i - p) // per_segment) == ((j - p) // per_segment)
            allowed = allowed | (visual_i & visual_j & same)
            if segment.local:  # no other segment: the prefix and its own only
                allowed = allowed & ~(visual_i & visual_j & ~same)
        additive = torch.zeros(length, length)
        additive[~allowed] = torch.finfo(torch.float32).min
        return additive[None, None]

    @torch.inference_mode()
    def __call__(self, visual: torch.Tensor, segment: SegmentMask) -> ScoringResult:
        lm = self.model.model.language_model
        x = torch.cat([lm.embed_tokens(self.prefix), visual, lm.embed_tokens(self.suffix)])[None]
        out = lm(
            inputs_embeds=x,
            position_ids=self.positions()[:, None, :],
            attention_mask=self.mask(visual.shape[0], segment),
            output_attentions=True,
            output_hidden_states=True,
        )
        p, n = len(self.prefix), visual.shape[0]
        query_from = 1 if int(self.suffix[0]) == self.config.vision_end_token_id else 0
        probs = out.attentions[self.prune_layer][0]  # [H, L, L]
        scores = probs[:, p + n + query_from :, p : p + n].mean(dim=(0, 1))
        hidden = out.hidden_states[self.prune_layer][0, p : p + n]
        return ScoringResult(scores, hidden)


def _with_query_after_video(prefix: list[int], suffix: list[int], tokenizer) -> list[int]:
    """The query rule of docs/method.md, written out from its text: the query is the
    user's text after the video in its turn; when there is none, the user's text before
    the video (after the turn's role line, without <|vision_start|>) goes right after
    <|vision_end|>."""
    turn_start, turn_end = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    after = suffix[1 : suffix.index(turn_end)]  # suffix[0] is <|vision_end|>
    if tokenizer.decode(after, skip_special_tokens=True).strip():
        return suffix
    turn = prefix[len(prefix) - prefix[::-1].index(turn_start) :]  # "user\n ... <|vision_start|>"
    role_line = next(i for i, t in enumerate(turn) if "\n" in tokenizer.decode([t]))
    question = turn[role_line + 1 : -1]
    return suffix[:1] + question + suffix[1:]
