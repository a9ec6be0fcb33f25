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


FOLLOW_UP = "\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


@dataclass
class Batch:
    inputs: dict[str, torch.Tensor]  # Qwen2_5_VLModel keyword arguments (right-padded)
    # Every supervised token: [B, M] positions that predict it and the ids (-100 = padding).
    # Column 0 is the first turn's answer, the one serving asks for.
    target_positions: torch.Tensor
    target_ids: torch.Tensor
    video_token_id: int

    @property
    def prompt_lengths(self) -> torch.Tensor:  # [B]: the first answer is predicted at length - 1
        return self.target_positions[:, 0] + 1

    @property
    def answer_ids(self) -> torch.Tensor:  # [B]: the first answer
        return self.target_ids[:, 0]


def collate(clips: list[Clip], tokenizer: PreTrainedTokenizerFast, follow_ups: bool = False) -> Batch:
    """Right-padded batch. Each sequence is the chat prompt, the answer and <|im_end|>;
    with `follow_ups`, every other question about the clip follows as another turn."""
    video_id = tokenizer.convert_tokens_to_ids(VIDEO_PAD)
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    sequences, targets = [], []
    for clip in clips:
        pairs = clip.questions() if follow_ups else [(clip.question, clip.answer)]
        sequence, supervised = [], []
        for turn, (question, answer) in enumerate(pairs):
            if turn == 0:
                sequence += prompt_ids(tokenizer, question)
            else:
                sequence += tokenizer.encode(FOLLOW_UP.format(question=question), add_special_tokens=False)
            answer_id = tokenizer.encode(answer, add_special_tokens=False)[0]
            supervised += [(len(sequence) - 1, answer_id), (len(sequence), end_id)]
            sequence += [answer_id, end_id]
        sequences.append(sequence)
        targets.append(supervised)
    length = max(map(len, sequences))
    width = max(map(len, targets))
    input_ids = torch.full((len(clips), length), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    position_ids = torch.zeros((3, len(clips), length), dtype=torch.long)
    target_positions = torch.zeros((len(clips), width), dtype=torch.long)
    target_ids = torch.full((len(clips), width), -100, dtype=torch.long)
    for i, (seq, supervised) in enumerate(zip(sequences, targets, strict=True)):
        input_ids[i, : len(seq)] = torch.tensor(seq)
        attention_mask[i, : len(seq)] = 1
        position_ids[:, i, : len(seq)] = vllm_mrope_positions(seq, video_id)
        target_positions[i, : len(supervised)] = torch.tensor([p for p, _ in supervised])
        target_ids[i, : len(supervised)] = torch.tensor([t for _, t in supervised])
    pixels = torch.from_numpy(np.concatenate([patchify(clip.frames) for clip in clips]))
    inputs = dict(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        pixel_values_videos=pixels,
        video_grid_thw=torch.tensor([[GRID_T, GRID_H, GRID_W]] * len(clips)),
    )
    return Batch(inputs, target_positions, target_ids, video_id)
