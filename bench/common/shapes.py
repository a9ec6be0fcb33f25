"""Bench models that cost like the real ones: the real depth, and widths chosen so that,
at the measured video, the language model's attention share of its prefill FLOPs and
the vision tower's FLOPs against the language model's are the real model's.

Why these two: a prefill's time splits between the vision tower and the language model
(so the whole-pipeline speed-up depends on their ratio), and the language model's
between attention, which grows with L^2, and the linear layers, which grow with L (so
pruning's speed-up depends on that share). The share is set by L against the FFN width
(attention/linear = 2L / (c * hidden + 3 * FFN) per layer), not by the hidden width: a
narrow model keeps the share only with a wide FFN. The cost model is bench/flops.py's.
"""

from __future__ import annotations

import copy

from bench.common.models import real_config, text_of
from bench.flops import PROMPT_TEXT, QUERY_TEXT, Model, VideoShape

# name -> (the real model's config file, the video it is measured at: N = 4096 tokens)
TARGETS = {
    "qwen2.5-vl-7b": ("qwen2_5_vl_7b", VideoShape(32, 448, 448)),
    "qwen3-vl-8b": ("qwen3_vl_8b", VideoShape(32, 512, 512)),
}
# The narrow widths: a language model of 64 (2 heads of 32, the smallest head vLLM's CPU
# attention takes, and one KV head) and a vision
# tower of 64 keep a 28- or 36-layer prefill of 4k tokens to seconds on 2 CPU cores.
TEXT = {"hidden_size": 64, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32}
VISION = {"hidden_size": 64, "num_heads": 2}
TOLERANCE = 0.10


def attention_share(model: Model, video: VideoShape) -> float:
    """The language model's attention FLOPs over its whole prefill FLOPs, unpruned."""
    decoder = model.decoder
    length = PROMPT_TEXT + model.vision.tokens(video) + QUERY_TEXT
    attention = 4 * length * length * decoder.heads * decoder.head_dim * decoder.layers
    return attention / decoder.prefill(length)


def vision_lm_ratio(model: Model, video: VideoShape) -> float:
    """The vision tower's FLOPs over the language model's unpruned prefill FLOPs."""
    length = PROMPT_TEXT + model.vision.tokens(video) + QUERY_TEXT
    return model.vision.flops(video) / model.decoder.prefill(length)


def matched_config(target: str) -> dict:
    """The target's config.json fields with the narrow widths, and the language model's
    and the vision tower's FFN widths solved for the target's attention share and
    vision/LM ratio at its video."""
    file, video = TARGETS[target]
    real = real_config(file)
    real_model = Model.load(target, real)
    config = copy.deepcopy(real)
    text = text_of(config)
    text.update(TEXT, vocab_size=1024)
    if config["model_type"] != "qwen3_vl":
        text.pop("head_dim")  # Qwen2.5-VL derives it from the hidden size
    config["vision_config"].update(VISION, out_hidden_size=TEXT["hidden_size"])
    share = attention_share(real_model, video)
    text["intermediate_size"] = _solve(
        lambda ffn: attention_share(Model.load(target, _with(config, text_ffn=ffn)), video),
        share,
        64,
        1 << 20,
    )
    ratio = vision_lm_ratio(real_model, video)
    config["vision_config"]["intermediate_size"] = _solve(
        lambda ffn: -vision_lm_ratio(Model.load(target, _with(config, vision_ffn=ffn)), video),
        -ratio,
        16,
        1 << 20,
    )
    return config


def shape_summary(config: dict, target: str) -> dict:
    """The bench model's costs next to the real model's, at the measured video."""
    file, video = TARGETS[target]
    bench, real = Model.load("bench", config), Model.load(target, real_config(file))
    rows = {
        "attention_share": (attention_share(bench, video), attention_share(real, video)),
        "vision_lm_ratio": (vision_lm_ratio(bench, video), vision_lm_ratio(real, video)),
        "layers": (bench.decoder.layers, real.decoder.layers),
    }
    summary = {
        name: {
            "bench": b,
            "target": t,
            "relative_error": b / t - 1,
            "within_10pct": abs(b / t - 1) <= TOLERANCE,
        }
        for name, (b, t) in rows.items()
    }
    summary["video"] = video.__dict__
    summary["video_tokens"] = bench.vision.tokens(video)
    return summary


def _with(config: dict, text_ffn: int | None = None, vision_ffn: int | None = None) -> dict:
    out = copy.deepcopy(config)
    if text_ffn is not None:
        text_of(out)["intermediate_size"] = text_ffn
    if vision_ffn is not None:
        out["vision_config"]["intermediate_size"] = vision_ffn
    return out


def _solve(value, target: float, low: int, high: int) -> int:
    """The integer x in [low, high] at which the decreasing `value(x)` is closest to `target`."""
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if value(middle) > target else (low, middle)
    return min((low, high), key=lambda x: abs(value(x) - target))
