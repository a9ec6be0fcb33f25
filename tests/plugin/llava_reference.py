"""An independent reference for LLaVA-OneVision: the same checkpoint loaded with HF
transformers (eager attention, fp32), driven by sharp_plugin.core outside vLLM.

Nothing here comes from sharp_plugin.vllm. Written from docs/method.md ("Families", LLaVA-OneVision):
the scoring pass runs over [prefix | frame tokens | newline | suffix] at positions 0..L-1,
the query is the text after the newline, segments are groups of whole frames; the pruned
prompt holds the kept frame tokens then the newline, at consecutive positions."""

from __future__ import annotations

import numpy as np
import torch

from sharp_plugin.core import ScoringResult
from sharp_plugin.core.masks import SegmentMask


class LlavaReference:
    def __init__(self, model_dir):
        from transformers import AutoProcessor, LlavaOnevisionForConditionalGeneration

        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.model = LlavaOnevisionForConditionalGeneration.from_pretrained(
            model_dir, dtype=torch.float32, attn_implementation="eager"
        ).eval()
        self.config = self.model.config

    @torch.inference_mode()
    def video_rows(self, frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(frame tokens [N, D], the newline row [1, D]) of one video."""
        pixels = self.processor.video_processor(videos=[frames], return_tensors="pt")["pixel_values_videos"]
        rows = self.model.model.get_video_features(
            pixels, vision_feature_layer=-1, vision_feature_select_strategy="full"
        ).pooler_output[0]
        return rows[:-1], rows[-1:]

    def prepare(self, prompt: str, frames: np.ndarray):
        ids = self.processor.tokenizer(prompt)["input_ids"]
        at = ids.index(self.config.video_token_index)
        visual, newline = self.video_rows(frames)
        black, _ = self.video_rows(np.zeros_like(frames))
        tokens_per_frame = visual.shape[0] // len(frames)
        return ids[:at], ids[at + 1 :], visual, newline, black, tokens_per_frame

    def scoring_pass(self, prefix, suffix, newline, tokens_per_frame, prune_layer):
        """`prefix`: token ids, or embeddings [P, D] (a prompt with media before the video)."""
        return _ScoringPass(self.model, prefix, suffix, newline, tokens_per_frame, prune_layer)

    @torch.inference_mode()
    def embed(self, ids) -> torch.Tensor:
        return self.model.model.language_model.embed_tokens(torch.tensor(ids))

    @torch.inference_mode()
    def prompt_logprobs(self, prompt_ids, num_prefix, visual, newline, kept, original_positions=False):
        """Log-prob of each prompt token given the ones before it, from an HF forward over
        the pruned prompt [prefix | kept frame tokens | newline | suffix]: at positions
        0..L-1 (what serving does), or with `original_positions` at the positions the
        tokens hold in the unpruned prompt. # [L - 1] float32"""
        ids = torch.tensor(prompt_ids)
        lm = self.model.model.language_model
        x = lm.embed_tokens(ids)
        start = num_prefix
        x[start : start + len(kept)] = visual[kept]
        x[start + len(kept)] = newline[0]
        positions = torch.arange(len(ids))
        if original_positions:
            num_suffix = len(ids) - num_prefix - len(kept) - 1
            after = num_prefix + visual.shape[0]  # the newline's unpruned position
            positions = torch.cat(
                [torch.arange(num_prefix), num_prefix + kept, torch.arange(num_suffix + 1) + after]
            )
        hidden = lm(inputs_embeds=x[None], position_ids=positions[None]).last_hidden_state
        logprobs = self.model.lm_head(hidden[0]).log_softmax(dim=-1)
        return logprobs[:-1].gather(1, ids[1:, None])[:, 0]


class _ScoringPass:
    def __init__(self, model, prefix, suffix, newline, tokens_per_frame, prune_layer):
        self.model = model
        self.prefix = prefix if torch.is_tensor(prefix) else torch.tensor(prefix)
        self.suffix = torch.tensor(suffix)
        self.newline, self.tokens_per_frame, self.prune_layer = newline, tokens_per_frame, prune_layer

    def mask(self, num_visual: int, segment: SegmentMask) -> torch.Tensor:
        p = len(self.prefix)
        length = p + num_visual + 1 + len(self.suffix)
        i = torch.arange(length)[:, None]
        j = torch.arange(length)[None, :]
        allowed = j <= i
        if segment.groups:
            per_segment = segment.groups * self.tokens_per_frame
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
        prefix = self.prefix if self.prefix.is_floating_point() else lm.embed_tokens(self.prefix)
        x = torch.cat([prefix, visual, self.newline, lm.embed_tokens(self.suffix)])[None]
        out = lm(
            inputs_embeds=x,
            position_ids=torch.arange(x.shape[1])[None],
            attention_mask=self.mask(visual.shape[0], segment),
            output_attentions=True,
            output_hidden_states=True,
        )
        p, n = len(self.prefix), visual.shape[0]
        probs = out.attentions[self.prune_layer][0]  # [H, L, L]
        scores = probs[:, p + n + 1 :, p : p + n].mean(dim=(0, 1))  # query: the text after the newline
        hidden = out.hidden_states[self.prune_layer][0, p : p + n]
        return ScoringResult(scores, hidden)
