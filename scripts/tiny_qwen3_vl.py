"""A tiny, randomly initialised Qwen3-VL checkpoint, built offline and deterministically
(`python scripts/build_tiny_model.py OUT --family qwen3-vl`).

The ShaRP Qwen3-VL family's test model (tests/plugin/test_qwen3_vl.py). Qwen3
language model (4 layers x 128, head dim 32, interleaved M-RoPE sections 6/5/5) behind a
2-block vision tower with patch 16 and deepstack features from both blocks. The video
processor's pixel budget counts all frames together; 8 frames of 128² make a 4 x 8 x 8
grid, 16 tokens per temporal group, each group preceded by its timestamp text
("<0.2 seconds>") in the prompt. Images and videos are normalised alike, as in released
checkpoints.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    Qwen2VLImageProcessor,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
)

from proxy_videoqa.checkpoint import save_weights
from proxy_videoqa.tokenizer import SPECIAL_TOKENS, build_tokenizer

PATCH, MERGE, TEMPORAL_PATCH = 16, 2, 2
# Timestamps are text: the tokenizer must have seen their pieces.
TIMESTAMP_CORPUS = ["<0.2 seconds> <1.2 seconds> <2.5 seconds> 0123456789 . seconds"] * 20


def build(
    out_dir: str | Path, corpus: list[str], num_layers: int = 4, architecture: str | None = None
) -> Path:
    torch.manual_seed(0)
    tokenizer = build_tokenizer(corpus + TIMESTAMP_CORPUS)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=1024, hidden_size=128, intermediate_size=256, num_hidden_layers=num_layers,
            num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=8192,
            rms_norm_eps=1e-6,
            rope_parameters={
                "rope_type": "default", "rope_theta": 5000000.0,
                "mrope_section": [6, 5, 5], "mrope_interleaved": True,
            },
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=2, hidden_size=64, intermediate_size=128, num_heads=2, patch_size=PATCH,
            spatial_merge_size=MERGE, temporal_patch_size=TEMPORAL_PATCH, out_hidden_size=128,
            num_position_embeddings=64, deepstack_visual_indexes=[0, 1],
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )  # fmt: skip
    if architecture:
        config.architectures = [architecture]
    out = save_weights(Qwen3VLForConditionalGeneration(config).float(), tokenizer, out_dir)
    # Pixels per video (all frames together): up to 256 merged 32 x 32 blocks (8 frames
    # of 128² keep their size: 4 temporal groups of 4 x 4 tokens).
    budget = {"longest_edge": 32 * 32 * 256, "shortest_edge": 32 * 32 * 4}
    geometry = dict(patch_size=PATCH, merge_size=MERGE, temporal_patch_size=TEMPORAL_PATCH)
    normalisation = dict(image_mean=[0.5] * 3, image_std=[0.5] * 3)
    Qwen3VLProcessor(
        # Released Qwen3-VL checkpoints normalise images and videos alike (mean = std =
        # 0.5); vLLM's on-device normalisation reads the image processor's values for both.
        image_processor=Qwen2VLImageProcessor(size=budget, **normalisation, **geometry),
        video_processor=Qwen3VLVideoProcessor(size=budget, do_sample_frames=False, **geometry),
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
    ).save_pretrained(out)
    return out
