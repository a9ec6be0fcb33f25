"""Build a tiny, randomly initialised Qwen2.5-VL, LLaVA-OneVision or Qwen3-VL checkpoint, offline.

Usage: python scripts/build_tiny_model.py OUT_DIR [--layers 4] [--arch ARCH]
       [--family qwen2.5-vl|llava-onevision|qwen3-vl]

Writes config.json, model.safetensors, a byte-level BPE tokenizer trained locally with
the Qwen special tokens and chat template, and the processor configs. The same command
gives the same weights and tokenizer every time. It is for tests and smoke runs: its
answers are noise (the trained model is models/sharp-proxy-qwen25vl).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from proxy_videoqa.checkpoint import ModelSize, build_model, qwen25vl_config, save_checkpoint  # noqa: E402
from proxy_videoqa.tokenizer import build_tokenizer  # noqa: E402

CORPUS = [
    "You are a helpful assistant. Describe this video. What happens in the video?",
    "What colour is the circle? What colour is the square? Which shape comes first?",
    "red green blue yellow white circle square triangle cross left right first",
    "The quick brown fox jumps over the lazy dog. A person is walking in a park.",
    "system user assistant Picture Video frame image describe summarize answer question",
]


def build(
    out_dir: str | Path, num_layers: int = 4, architecture: str | None = None, family: str = "qwen2.5-vl"
) -> Path:
    if family == "llava-onevision":
        from scripts.tiny_llava_onevision import build as build_llava_onevision

        return build_llava_onevision(out_dir, CORPUS * 50, num_layers, architecture)
    if family == "qwen3-vl":
        from scripts.tiny_qwen3_vl import build as build_qwen3_vl

        return build_qwen3_vl(out_dir, CORPUS * 50, num_layers, architecture)
    torch.manual_seed(0)
    tokenizer = build_tokenizer(CORPUS * 50)
    size = ModelSize(
        text_hidden=128, text_layers=num_layers, text_heads=4, text_kv_heads=2, text_ffn=256,
        vision_depth=2, vision_hidden=64, vision_heads=2, vision_ffn=128,
    )  # fmt: skip
    model = build_model(qwen25vl_config(tokenizer, size))
    # Frames up to 224 x 224 keep their size (the server's default pixel budget).
    return save_checkpoint(
        model, tokenizer, out_dir, min_pixels=56 * 56, max_pixels=28 * 28 * 64, architecture=architecture
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--arch", default=None, help="architecture to write into config.json")
    parser.add_argument(
        "--family", choices=["qwen2.5-vl", "llava-onevision", "qwen3-vl"], default="qwen2.5-vl"
    )
    args = parser.parse_args()
    print(build(args.out_dir, args.layers, args.arch, args.family))


if __name__ == "__main__":
    main()
