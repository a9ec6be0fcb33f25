"""A tiny, randomly initialised LLaVA-OneVision checkpoint, built offline and
deterministically (`python scripts/build_tiny_model.py OUT --family llava-onevision`).

Qwen2 language model (4 layers x 128) behind a 2-block SigLIP tower at 112 x 112, so a
frame is 8 x 8 patches, pooled 2 x 2 to 4 x 4 = 16 tokens; 16 frames are 256 video
tokens plus the one newline token LLaVA-OneVision appends to a video. The tokenizer is
the test model's BPE with LLaVA's `<image>` and `<video>` tokens and LLaVA-OneVision's
chat template shape (media right after the role, then a newline and the text).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import (
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessor,
    LlavaOnevisionProcessor,
    LlavaOnevisionVideoProcessor,
)

from proxy_videoqa.checkpoint import save_weights
from proxy_videoqa.tokenizer import build_tokenizer

IMAGE_SIZE, PATCH = 112, 14
MEDIA_TOKENS = ["<image>", "<video>"]

# LLaVA-OneVision's template: "<|im_start|>user <video>\n{text}<|im_end|>".
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }} "
    "{% if message['content'] is string %}\n{{ message['content'] }}"
    "{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}<image>{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}<video>{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "\n{{ content['text'] }}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build(
    out_dir: str | Path, corpus: list[str], num_layers: int = 4, architecture: str | None = None
) -> Path:
    torch.manual_seed(0)
    tokenizer = build_tokenizer(corpus, extra_special_tokens=MEDIA_TOKENS, chat_template=CHAT_TEMPLATE)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>", *MEDIA_TOKENS)}
    pinpoints = [[IMAGE_SIZE, IMAGE_SIZE], [IMAGE_SIZE, 2 * IMAGE_SIZE], [2 * IMAGE_SIZE, IMAGE_SIZE]]
    config = LlavaOnevisionConfig(
        text_config=dict(
            model_type="qwen2", vocab_size=1024, hidden_size=128, intermediate_size=256,
            num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=8192, rms_norm_eps=1e-6,
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            model_type="siglip_vision_model", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=2, image_size=IMAGE_SIZE, patch_size=PATCH,
        ),
        image_token_index=ids["<image>"], video_token_index=ids["<video>"],
        vision_feature_layer=-1, vision_feature_select_strategy="full",
        image_grid_pinpoints=pinpoints, tie_word_embeddings=False,
    )  # fmt: skip
    if architecture:
        config.architectures = [architecture]
    out = save_weights(LlavaOnevisionForConditionalGeneration(config).float(), tokenizer, out_dir)
    _to_published_names(out / "model.safetensors")
    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=pinpoints),
        video_processor=LlavaOnevisionVideoProcessor(size=size),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
        num_image_tokens=(IMAGE_SIZE // PATCH) ** 2,
        vision_feature_select_strategy="full",
    ).save_pretrained(out)
    return out


def _to_published_names(path: Path) -> None:
    """Weight names as published LLaVA-OneVision checkpoints have them (and vLLM's loader
    expects): transformers 5 saves the SigLIP tower without its `vision_model.` level and
    with the pooling head that LLaVA never uses."""
    weights = load_file(path)
    renamed = {}
    for name, tensor in weights.items():
        if name.startswith("vision_tower.head."):
            continue
        if name.startswith("vision_tower.") and not name.startswith("vision_tower.vision_model."):
            name = "vision_tower.vision_model." + name.removeprefix("vision_tower.")
        renamed[name] = tensor
    save_file(renamed, path, metadata={"format": "pt"})
