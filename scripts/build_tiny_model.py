"""Build a tiny, randomly initialised Qwen2.5-VL checkpoint offline and deterministically.

Usage: python scripts/build_tiny_model.py OUT_DIR [--layers 4] [--arch ARCH]

Writes config.json, model.safetensors, a byte-level BPE tokenizer trained locally with
the Qwen special tokens and chat template, and the processor configs. The same command
gives the same weights and tokenizer every time. It is for tests and smoke runs: its
answers are noise (the trained demo model is a separate artifact).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GenerationConfig,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
)

SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
    "<|quad_start|>", "<|quad_end|>",
    "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]  # fmt: skip

CORPUS = [
    "You are a helpful assistant. Describe this video. What happens in the video?",
    "What colour is the circle? What colour is the square? Which shape comes first?",
    "red green blue yellow white circle square triangle cross left right first",
    "The quick brown fox jumps over the lazy dog. A person is walking in a park.",
    "system user assistant Picture Video frame image describe summarize answer question",
]

# Qwen2.5-VL's chat template, reduced to what the tiny tokenizer needs.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content or 'video_url' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1000,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(CORPUS * 50, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
        model_max_length=32768,
        chat_template=CHAT_TEMPLATE,
    )


def build(out_dir: str | Path, num_layers: int = 4, architecture: str | None = None) -> Path:
    out = Path(out_dir)
    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    hidden = 128
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=1024, hidden_size=hidden, intermediate_size=256, num_hidden_layers=num_layers,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
            rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 6, 6]},
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=2, hidden_size=64, intermediate_size=128, num_heads=2, in_channels=3,
            patch_size=14, spatial_merge_size=2, temporal_patch_size=2, tokens_per_second=2,
            window_size=112, out_hidden_size=hidden, fullatt_block_indexes=[1],
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )  # fmt: skip
    config.bos_token_id = ids["<|endoftext|>"]
    config.eos_token_id = ids["<|im_end|>"]
    config.pad_token_id = ids["<|endoftext|>"]
    # Build in fp32 (a bf16 text config would leave the tower and head in fp32: mixed
    # dtypes break fp32 forwards), then store bf16.
    model = Qwen2_5_VLForConditionalGeneration(config).float().to(torch.bfloat16)
    model.save_pretrained(out)
    GenerationConfig(
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
        do_sample=False,
    ).save_pretrained(out)
    pixel_budget = dict(
        min_pixels=56 * 56, max_pixels=28 * 28 * 64, patch_size=14, temporal_patch_size=2, merge_size=2
    )
    Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**pixel_budget),
        video_processor=Qwen2VLVideoProcessor(**pixel_budget),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    ).save_pretrained(out)
    if architecture:
        config_path = out / "config.json"
        saved = json.loads(config_path.read_text())
        saved["architectures"] = [architecture]
        config_path.write_text(json.dumps(saved, indent=2))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--arch", default=None, help="architecture to write into config.json")
    args = parser.parse_args()
    print(build(args.out_dir, args.layers, args.arch))


if __name__ == "__main__":
    main()
