"""Model directories the benches serve without weights: a config.json (a real model's, or
a shape matched to one), a tokenizer trained here, and the processor configs. Engines
load them with `load_format="dummy"` (random weights): speed does not depend on the
weights, and a 7B model's directory is a few hundred KiB, built in seconds, offline."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from transformers import (
    GenerationConfig,
    Qwen2_5_VLConfig,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
    Qwen3VLConfig,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
)

from proxy_videoqa.tokenizer import SPECIAL_TOKENS, build_tokenizer

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bench" / "data" / "model_configs"
CORPUS = [
    "You are a helpful assistant. Describe this video. What happens in the video?",
    "What colour is the circle? Which shape comes first? Where is the object?",
    "The quick brown fox jumps over the lazy dog. A person is walking in a park.",
    # Qwen3-VL's timestamps are text: the tokenizer must have seen their pieces.
    "<0.2 seconds> <1.2 seconds> <2.5 seconds> 0123456789 . seconds",
]
LOAD_DUMMY = {"load_format": "dummy"}


def real_config(name: str) -> dict:
    """A real model's config.json fields, as bench/data/model_configs holds them."""
    config = json.loads((CONFIGS / f"{name}.json").read_text())
    config.pop("_source", None)
    return config


def text_of(config: dict) -> dict:
    """The language model's fields: top-level in Qwen2.5-VL's config, nested in Qwen3-VL's."""
    return config.get("text_config", config)


def write_model(out: Path, config: dict, *, max_pixels: int, context: int = 32768) -> Path:
    """A servable model directory for `config` (config.json fields of a Qwen2.5-VL or
    Qwen3-VL), its video processor taking frames up to `max_pixels` each. Rebuilt only
    when the config changes."""
    out = Path(out)
    key = json.dumps({"config": config, "max_pixels": max_pixels, "context": context}, sort_keys=True)
    if (out / "bench_config.json").exists() and (out / "bench_config.json").read_text() == key:
        return out
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(CORPUS * 50)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    tokens = {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }
    text = copy.deepcopy(text_of(config))
    vision = copy.deepcopy(config["vision_config"])
    head_dim = text.get("head_dim") or text["hidden_size"] // text["num_attention_heads"]
    text.update(
        max_position_embeddings=context,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        vocab_size=max(text.get("vocab_size", 0), len(tokenizer)),
        rope_parameters=_mrope(head_dim, config["model_type"]),
    )
    geometry = dict(
        patch_size=vision["patch_size"],
        merge_size=vision["spatial_merge_size"],
        temporal_patch_size=vision["temporal_patch_size"],
    )
    if config["model_type"] == "qwen2_5_vl":
        hf = Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **tokens)
        budget = dict(min_pixels=56 * 56, max_pixels=max_pixels)
        processor = Qwen2_5_VLProcessor(
            image_processor=Qwen2VLImageProcessor(**budget, **geometry),
            video_processor=Qwen2VLVideoProcessor(**budget, **geometry),
            tokenizer=tokenizer,
            chat_template=tokenizer.chat_template,
        )
    elif config["model_type"] == "qwen3_vl":
        hf = Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **tokens)
        # The video budget counts every frame together: enough for 256 frames of max_pixels.
        budget = {"longest_edge": max_pixels * 256, "shortest_edge": 32 * 32 * 4}
        normalisation = dict(image_mean=[0.5] * 3, image_std=[0.5] * 3)
        processor = Qwen3VLProcessor(
            image_processor=Qwen2VLImageProcessor(size=budget, **normalisation, **geometry),
            video_processor=Qwen3VLVideoProcessor(size=budget, do_sample_frames=False, **geometry),
            tokenizer=tokenizer,
            chat_template=tokenizer.chat_template,
        )
    else:
        raise ValueError(f"no bench model directory for {config['model_type']}")
    hf.architectures = config.get("architectures") or [
        type(hf).__name__.replace("Config", "ForConditionalGeneration")
    ]
    hf.bos_token_id, hf.eos_token_id = ids["<|endoftext|>"], ids["<|im_end|>"]
    hf.save_pretrained(out)
    processor.save_pretrained(out)
    GenerationConfig(
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]
    ).save_pretrained(out)
    (out / "bench_config.json").write_text(key)
    return out


def _mrope(head_dim: int, model_type: str) -> dict:
    """M-RoPE sections in Qwen-VL's 2:3:3 ratio over half the head dim ([16, 24, 24] at
    128); Qwen3-VL interleaves them."""
    half = head_dim // 2
    sections = [half // 4, 3 * half // 8, 3 * half // 8]
    sections[0] += half - sum(sections)
    parameters = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": sections}
    if model_type == "qwen3_vl":
        parameters["mrope_interleaved"] = True
    return parameters
