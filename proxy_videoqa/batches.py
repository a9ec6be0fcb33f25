"""Prompts and training batches for the proxy task."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedTokenizerFast

from .clips import Clip
from .geometry import GRID_H, GRID_T, GRID_W, VIDEO_TOKENS
from .pixels import patchify
from .positions import vllm_mrope_positions
from .tokenizer import VIDEO_PAD


def chat_prompt(tokenizer: PreTrainedTokenizerFast, question: str) -> str:
    """The prompt a chat request with one video followed by the question renders to."""
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def prompt_ids(tokenizer: PreTrainedTokenizerFast, question: str) -> list[int]:
    """Token ids of the chat prompt with the video placeholder expanded to its tokens."""
    text = chat_prompt(tokenizer, question).replace(VIDEO_PAD, VIDEO_PAD * VIDEO_TOKENS)
    return tokenizer.encode(text, add_special_tokens=False)


@dataclass
class Batch:
    inputs: dict[str, torch.Tensor]  # Qwen2_5_VLModel keyword arguments (right-padded)
    prompt_lengths: torch.Tensor  # [B]: the answer is predicted at prompt_lengths - 1
    answer_ids: torch.Tensor  # [B]
    end_id: int  # <|im_end|>, predicted after the answer


def collate(clips: list[Clip], tokenizer: PreTrainedTokenizerFast) -> Batch:
    video_id = tokenizer.convert_tokens_to_ids(VIDEO_PAD)
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    prompts = [prompt_ids(tokenizer, clip.question) for clip in clips]
    answers = [tokenizer.encode(clip.answer, add_special_tokens=False)[0] for clip in clips]
    sequences = [p + [a, end_id] for p, a in zip(prompts, answers, strict=True)]
    length = max(map(len, sequences))
    input_ids = torch.full((len(clips), length), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    position_ids = torch.zeros((3, len(clips), length), dtype=torch.long)
    for i, seq in enumerate(sequences):
        input_ids[i, : len(seq)] = torch.tensor(seq)
        attention_mask[i, : len(seq)] = 1
        position_ids[:, i, : len(seq)] = vllm_mrope_positions(seq, video_id)
    pixels = torch.from_numpy(np.concatenate([patchify(clip.frames) for clip in clips]))
    inputs = dict(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        pixel_values_videos=pixels,
        video_grid_thw=torch.tensor([[GRID_T, GRID_H, GRID_W]] * len(clips)),
    )
    return Batch(inputs, torch.tensor([len(p) for p in prompts]), torch.tensor(answers), end_id)
