"""Small Qwen2.5-VL configs, and checkpoints that vLLM loads unchanged.

Shared by the trained proxy model and the random-weights test model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    GenerationConfig,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
)

from .geometry import MERGE, PATCH, TEMPORAL_PATCH, TOKENS_PER_SECOND
from .tokenizer import SPECIAL_TOKENS


@dataclass(frozen=True)
class ModelSize:
    text_hidden: int
    text_layers: int
    text_heads: int
    text_kv_heads: int
    text_ffn: int
    vision_depth: int
    vision_hidden: int
    vision_heads: int
    vision_ffn: int


def qwen25vl_config(tokenizer: PreTrainedTokenizerFast, size: ModelSize) -> Qwen2_5_VLConfig:
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    half_head = size.text_hidden // size.text_heads // 2
    # M-RoPE sections (t, h, w) in Qwen2.5-VL's 2:3:3 ratio ([16, 24, 24] at head dim 128).
    mrope_section = [half_head // 4, 3 * half_head // 8, 3 * half_head // 8]
    mrope_section[0] += half_head - sum(mrope_section)
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=1024, hidden_size=size.text_hidden, intermediate_size=size.text_ffn,
            num_hidden_layers=size.text_layers, num_attention_heads=size.text_heads,
            num_key_value_heads=size.text_kv_heads, max_position_embeddings=8192, rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope_section},
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=size.vision_depth, hidden_size=size.vision_hidden, intermediate_size=size.vision_ffn,
            num_heads=size.vision_heads, in_channels=3, patch_size=PATCH, spatial_merge_size=MERGE,
            temporal_patch_size=TEMPORAL_PATCH, tokens_per_second=TOKENS_PER_SECOND, window_size=112,
            out_hidden_size=size.text_hidden, fullatt_block_indexes=list(range(1, size.vision_depth, 2)),
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )  # fmt: skip
    config.bos_token_id = ids["<|endoftext|>"]
    config.eos_token_id = ids["<|im_end|>"]
    config.pad_token_id = ids["<|endoftext|>"]
    return config


def build_model(config: Qwen2_5_VLConfig) -> Qwen2_5_VLForConditionalGeneration:
    # Build in fp32: a bf16 text config would leave the vision tower and head in fp32,
    # and mixed dtypes break every fp32 forward. Checkpoints are stored in bf16.
    return Qwen2_5_VLForConditionalGeneration(config).float()


def save_generation_config(tokenizer: PreTrainedTokenizerFast, out: Path) -> None:
    """Greedy decoding that stops at the end of the assistant's turn (Qwen's tokens)."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>")}
    GenerationConfig(
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
        do_sample=False,
    ).save_pretrained(out)


def save_weights(model, tokenizer: PreTrainedTokenizerFast, out: str | Path) -> Path:
    """Weights in bf16 (the model itself stays fp32) and the generation config. Every
    checkpoint the project builds, whatever its family, starts so."""
    out = Path(out)
    model.to(torch.bfloat16).save_pretrained(out)
    model.float()
    save_generation_config(tokenizer, out)
    return out


def save_checkpoint(
    model: Qwen2_5_VLForConditionalGeneration,
    tokenizer: PreTrainedTokenizerFast,
    out: str | Path,
    *,
    min_pixels: int,
    max_pixels: int,
    architecture: str | None = None,
    extra_config: dict | None = None,
) -> Path:
    """Weights in bf16, generation config, tokenizer and processor configs in one directory."""
    out = save_weights(model, tokenizer, out)
    pixel_budget = dict(
        min_pixels=min_pixels, max_pixels=max_pixels, patch_size=PATCH,
        temporal_patch_size=TEMPORAL_PATCH, merge_size=MERGE,
    )  # fmt: skip
    Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**pixel_budget),
        video_processor=Qwen2VLVideoProcessor(**pixel_budget),
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
    ).save_pretrained(out)
    if architecture or extra_config:
        config_path = out / "config.json"
        saved = json.loads(config_path.read_text())
        if architecture:
            saved["architectures"] = [architecture]
        saved.update(extra_config or {})
        config_path.write_text(json.dumps(saved, indent=2) + "\n")
    return out
