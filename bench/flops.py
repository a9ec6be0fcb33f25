"""Analytical prefill FLOPs per stage (vision tower, scoring pass, prior, language model,
whole pipeline) for Qwen2.5-VL-7B, Qwen3-VL-8B and LLaVA-OneVision-7B, from their real
config.json values (bench/data/model_configs/), validated against
torch.utils.flop_counter.FlopCounterMode on the same architectures at a reduced size.

Usage: python -m bench.flops [--validate-only]   (about 10 s)
Prints the validation, a table per model across frames x resolution, retention and K,
and the operating points where our design (a separate scoring pass to layer K, then a
full prefill of the pruned prompt) reaches the paper's -86% language-model cut.
Writes flops.json and flops.md to --out (bench/results).

Conventions (FlopCounterMode's): a matmul of [m, k] x [k, n] is 2mkn; attention is two
matmuls over every (row, key) pair, dense: a causal kernel skips about half of that
term, which is under 12% of a 7B layer's FLOPs at 4k tokens. Norms, activations, RoPE
and softmax are not counted. The scoring pass is what sharp_plugin/vllm/scoring_pass.py
computes: K full layers, then layer K's QKV over every row and the query rows' QK^T.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

from bench.common.results import add_output_arguments, output_dir, write_report

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bench/data/model_configs"
MODELS = {
    "Qwen2.5-VL-7B": "qwen2_5_vl_7b.json",
    "Qwen3-VL-8B": "qwen3_vl_8b.json",
    "LLaVA-OneVision-7B": "llava_onevision_7b.json",
}
PROMPT_TEXT, QUERY_TEXT = 16, 24  # tokens before the video, and after it (question + template)


# ---- the language model ---------------------------------------------------------------
@dataclass(frozen=True)
class Decoder:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int

    @classmethod
    def from_config(cls, text: dict) -> Decoder:
        heads = text["num_attention_heads"]
        return cls(
            hidden=text["hidden_size"],
            intermediate=text["intermediate_size"],
            layers=text["num_hidden_layers"],
            heads=heads,
            kv_heads=text["num_key_value_heads"],
            head_dim=text.get("head_dim") or text["hidden_size"] // heads,
            vocab=text["vocab_size"],
        )

    def qkv(self, rows: int) -> float:
        return 2 * rows * self.hidden * (self.heads + 2 * self.kv_heads) * self.head_dim

    def layer(self, rows: int, keys: int) -> float:
        attention = 4 * rows * keys * self.heads * self.head_dim
        out = 2 * rows * self.heads * self.head_dim * self.hidden
        mlp = 6 * rows * self.hidden * self.intermediate  # gate, up, down
        return self.qkv(rows) + attention + out + mlp

    def prefill(self, length: int) -> float:
        """Every layer over the prompt, and the logits of its last token."""
        return self.layers * self.layer(length, length) + 2 * self.hidden * self.vocab

    def scoring_pass(self, length: int, query_rows: int, k_layer: int) -> float:
        """Layers [0, K) over the whole sequence, then layer K's QKV and the query rows'
        attention logits over every key."""
        return (
            k_layer * self.layer(length, length)
            + self.qkv(length)
            + 2 * query_rows * length * self.heads * self.head_dim
        )

    def scoring_pass_local(self, prefix: int, video: int, query: int, segment: int, k_layer: int) -> float:
        """The same under the segment-local mask: in layers [0, K) a visual row attends
        over the prefix and its own segment only; text rows over the whole sequence
        (counted dense, as above)."""
        length = prefix + video + query
        pairs = video * (prefix + segment) + (prefix + query) * length
        attention = 4 * pairs * self.heads * self.head_dim
        dense = self.layer(length, length) - 4 * length * length * self.heads * self.head_dim
        return (
            k_layer * (dense + attention)
            + self.qkv(length)
            + 2 * (query - 1) * length * self.heads * self.head_dim
        )


# ---- the vision towers ------------------------------------------------------------------
@dataclass(frozen=True)
class VideoShape:
    frames: int
    height: int  # pixels, as the processor resizes them
    width: int


class VisionTower:
    def tokens(self, video: VideoShape) -> int: ...

    def flops(self, video: VideoShape) -> float: ...

    def one_group(self, video: VideoShape) -> VideoShape:
        """The shape of one temporal group: what the black prior embeds (and tiles)."""
        ...


def _block(patches: int, width: int, inner: int, mlp_mats: int, attention_pairs: int) -> float:
    """One transformer block: fused QKV, attention over `attention_pairs` (row, key)
    pairs summed over its attention windows, output projection, an MLP of `mlp_mats`
    matrices."""
    return (
        2 * patches * width * 3 * width
        + 4 * attention_pairs * width
        + 2 * patches * width * width
        + 2 * mlp_mats * patches * width * inner
    )


@dataclass(frozen=True)
class QwenVisionTower(VisionTower):
    """Qwen2.5-VL (window attention, gated MLP) and Qwen3-VL (full attention per temporal
    group, two-matrix MLP, deepstack mergers)."""

    width: int
    inner: int
    depth: int
    patch: int
    temporal_patch: int
    merge: int
    out_hidden: int
    in_channels: int
    window: int | None  # Qwen2.5-VL: window size in pixels; None: full attention
    full_blocks: tuple[int, ...]
    mlp_mats: int
    deepstack_mergers: int

    @classmethod
    def from_config(cls, vision: dict, qwen3: bool) -> QwenVisionTower:
        return cls(
            width=vision["hidden_size"],
            inner=vision["intermediate_size"],
            depth=vision["depth"],
            patch=vision["patch_size"],
            temporal_patch=vision["temporal_patch_size"],
            merge=vision["spatial_merge_size"],
            out_hidden=vision["out_hidden_size"],
            in_channels=vision.get("in_chans", vision.get("in_channels", 3)),
            window=None if qwen3 else vision["window_size"],
            full_blocks=tuple(range(vision["depth"])) if qwen3 else tuple(vision["fullatt_block_indexes"]),
            mlp_mats=2 if qwen3 else 3,
            deepstack_mergers=len(vision.get("deepstack_visual_indexes", ())) if qwen3 else 0,
        )

    def grid(self, video: VideoShape) -> tuple[int, int, int]:
        groups = math.ceil(video.frames / self.temporal_patch)
        return groups, video.height // self.patch, video.width // self.patch

    def tokens(self, video: VideoShape) -> int:
        t, h, w = self.grid(video)
        return t * h * w // (self.merge * self.merge)

    def one_group(self, video: VideoShape) -> VideoShape:
        return VideoShape(self.temporal_patch, video.height, video.width)

    def _window_pairs(self, h: int, w: int) -> int:
        """Sum of squared window lengths in one temporal group: windows of
        (window / patch / merge)^2 merged units, cut short at the grid's edge."""
        units = self.window // self.patch // self.merge
        rows, cols = h // self.merge, w // self.merge

        def spans(n: int) -> list[int]:
            return [min(units, n - start) for start in range(0, n, units)]

        per_unit = self.merge * self.merge
        return sum((r * c * per_unit) ** 2 for r in spans(rows) for c in spans(cols))

    def flops(self, video: VideoShape) -> float:
        t, h, w = self.grid(video)
        patches = t * h * w
        kernel = self.in_channels * self.temporal_patch * self.patch * self.patch
        total = 2 * patches * kernel * self.width  # patch embedding (a conv3d)
        full_pairs = t * (h * w) ** 2
        window_pairs = t * self._window_pairs(h, w) if self.window else full_pairs
        for index in range(self.depth):
            pairs = full_pairs if index in self.full_blocks else window_pairs
            total += _block(patches, self.width, self.inner, self.mlp_mats, pairs)
        merged = patches // (self.merge * self.merge)
        wide = self.width * self.merge * self.merge
        merger = 2 * merged * wide * wide + 2 * merged * wide * self.out_hidden
        return total + merger * (1 + self.deepstack_mergers)


@dataclass(frozen=True)
class SiglipTower(VisionTower):
    """LLaVA-OneVision: SigLIP on each frame at its native size, the projector on every
    patch, then 2x2 bilinear pooling of each frame's grid (and one newline token)."""

    width: int
    inner: int
    depth: int
    patch: int
    image_size: int
    text_hidden: int

    @classmethod
    def from_config(cls, config: dict) -> SiglipTower:
        vision = config["vision_config"]
        return cls(
            width=vision["hidden_size"],
            inner=vision["intermediate_size"],
            depth=vision["num_hidden_layers"],
            patch=vision["patch_size"],
            image_size=vision["image_size"],
            text_hidden=config["text_config"]["hidden_size"],
        )

    def side(self) -> int:
        return self.image_size // self.patch

    def tokens(self, video: VideoShape) -> int:
        pooled = math.ceil(self.side() / 2)
        return video.frames * pooled * pooled + 1  # + the video's newline token

    def one_group(self, video: VideoShape) -> VideoShape:
        return VideoShape(1, video.height, video.width)

    def flops(self, video: VideoShape) -> float:
        per_frame = self.side() ** 2
        patches = video.frames * per_frame
        total = 2 * patches * 3 * self.patch * self.patch * self.width
        total += self.depth * _block(patches, self.width, self.inner, 2, video.frames * per_frame**2)
        return total + 2 * patches * self.width * self.text_hidden + 2 * patches * self.text_hidden**2


@dataclass(frozen=True)
class Model:
    name: str
    decoder: Decoder
    vision: VisionTower

    @classmethod
    def load(cls, name: str, config: dict) -> Model:
        text = config.get("text_config", config)
        if config["model_type"] == "llava_onevision":
            vision: VisionTower = SiglipTower.from_config(config)
        else:
            vision = QwenVisionTower.from_config(config["vision_config"], config["model_type"] == "qwen3_vl")
        return cls(name, Decoder.from_config(text), vision)

    def stages(
        self, video: VideoShape, retention: float, k_layer: int, prior: str = "cached"
    ) -> dict[str, float]:
        """FLOPs per stage of one request, ours and unpruned. prior: 'cached' (the black
        prior served from its cache: `prior_query: generic` after a grid's first
        request), 'miss' (a second scoring pass: `prior_query: question`, or the mean
        prior; the black frame's embedding is cached by grid), 'cold' (a grid's first
        request: the miss and one temporal group through the tower), 'off'."""
        n = self.vision.tokens(video)
        kept = max(1, math.floor(retention * n + 0.5))
        length = PROMPT_TEXT + n + QUERY_TEXT
        vision = self.vision.flops(video)
        scoring = self.decoder.scoring_pass(length, QUERY_TEXT - 1, k_layer) if retention < 1 else 0.0
        prior_cost = 0.0
        if retention < 1 and prior in ("miss", "cold"):
            prior_cost = scoring
            if prior == "cold":
                prior_cost += self.vision.flops(self.vision.one_group(video))
        lm = self.decoder.prefill(PROMPT_TEXT + kept + QUERY_TEXT)
        unpruned_lm = self.decoder.prefill(length)
        # The paper's HF-style design drops tokens inside the forward: K layers over
        # everything, the rest over the kept tokens (no separate pass to pay for).
        pruned_length = PROMPT_TEXT + kept + QUERY_TEXT
        paper_lm = k_layer * self.decoder.layer(length, length) + (
            self.decoder.layers - k_layer
        ) * self.decoder.layer(pruned_length, pruned_length)
        ours_lm = scoring + prior_cost + lm
        return {
            "video_tokens": n,
            "kept": kept,
            "vision": vision,
            "scoring": scoring,
            "prior": prior_cost,
            "lm": lm,
            "unpruned_lm": unpruned_lm,
            "paper_lm": paper_lm,
            "lm_cut": 1 - ours_lm / unpruned_lm,
            "lm_speedup": unpruned_lm / ours_lm,
            "whole": vision + ours_lm,
            "unpruned_whole": vision + unpruned_lm,
            "whole_speedup": (vision + unpruned_lm) / (vision + ours_lm),
            "vision_per_token_vs_lm": vision / unpruned_lm,
        }


def load_models() -> dict[str, Model]:
    return {name: Model.load(name, json.loads((CONFIGS / file).read_text())) for name, file in MODELS.items()}


# ---- validation against FlopCounterMode -------------------------------------------------
SMALL_TEXT = {
    "hidden_size": 128,
    "intermediate_size": 320,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1000,
}


def reference_cases() -> list[tuple[str, dict, VideoShape]]:
    """(name, reduced config.json, video): each family at a reduced size, with a video
    whose grid has uneven edges (Qwen2.5-VL's windows do not tile it)."""
    qwen25 = {
        "model_type": "qwen2_5_vl",
        **SMALL_TEXT,
        "vision_config": {
            "depth": 4, "hidden_size": 64, "intermediate_size": 96, "num_heads": 4, "in_chans": 3,
            "out_hidden_size": 128, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
            "window_size": 112, "fullatt_block_indexes": [1, 3],
        },
    }  # fmt: skip
    qwen3 = {
        "model_type": "qwen3_vl",
        "text_config": {**SMALL_TEXT, "head_dim": 32},
        "vision_config": {
            "depth": 3, "hidden_size": 64, "intermediate_size": 96, "num_heads": 4, "in_channels": 3,
            "out_hidden_size": 128, "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2,
            "num_position_embeddings": 64, "deepstack_visual_indexes": [0, 2],
        },
    }  # fmt: skip
    llava = {
        "model_type": "llava_onevision",
        "text_config": SMALL_TEXT,
        "vision_config": {
            "hidden_size": 64, "image_size": 56, "intermediate_size": 96, "num_attention_heads": 4,
            "num_hidden_layers": 3, "patch_size": 14, "vision_use_head": False,
        },
    }  # fmt: skip
    return [
        ("Qwen2.5-VL (reduced)", qwen25, VideoShape(4, 280, 168)),
        ("Qwen3-VL (reduced)", qwen3, VideoShape(4, 128, 96)),
        ("LLaVA-OneVision (reduced)", llava, VideoShape(3, 56, 56)),
    ]


def count_reference(config: dict, video: VideoShape) -> dict[str, float]:
    """Build the Hugging Face model from `config` (random weights), run one prefill of
    [text, video, text] under FlopCounterMode, and sum the vision tower's FLOPs (with its
    projector) and the language model's (with the last token's logits)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoConfig, AutoModelForImageTextToText

    model_type = config["model_type"]
    text = config.get("text_config", {k: v for k, v in config.items() if k in SMALL_TEXT})
    text = {**text, "max_position_embeddings": 4096}
    vision = dict(config["vision_config"])
    special = {
        "image_token_id": 990,
        "video_token_id": 991,
        "vision_start_token_id": 992,
        "vision_end_token_id": 993,
    }
    if model_type == "llava_onevision":
        vision["model_type"] = "siglip_vision_model"
        hf_config = AutoConfig.for_model(
            model_type, text_config={**text, "model_type": "qwen2"}, vision_config=vision,
            image_token_index=990, video_token_index=991, vision_feature_layer=-1,
            vision_feature_select_strategy="full",
        )  # fmt: skip
    else:
        rope = {"rope_type": "default", "mrope_section": [4, 6, 6]}
        if model_type == "qwen3_vl":
            rope["mrope_interleaved"] = True
        hf_config = AutoConfig.for_model(
            model_type, text_config={**text, "rope_scaling": rope}, vision_config=vision, **special
        )
    # Eager attention: FlopCounterMode does not count the CPU flash-attention kernel
    # that SDPA dispatches to, and the eager matmuls are the same FLOPs.
    for sub in (hf_config, hf_config.text_config, hf_config.vision_config):
        sub._attn_implementation = "eager"
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(hf_config).eval()
    cost = Model.load("reference", config)
    n = cost.vision.tokens(video)
    inputs: dict = {}
    if model_type == "llava_onevision":
        side = vision["image_size"]
        inputs["pixel_values_videos"] = torch.randn(1, video.frames, 3, side, side)
        n -= 1  # the newline token comes from the model, after the video's features
    else:
        t, h, w = cost.vision.grid(video)
        patch = vision["patch_size"]
        inputs["pixel_values_videos"] = torch.randn(t * h * w, 3 * 2 * patch * patch)
        inputs["video_grid_thw"] = torch.tensor([[t, h, w]])
    ids = [5] * PROMPT_TEXT + [991] * n + [6] * QUERY_TEXT
    if model_type == "llava_onevision":
        ids = [5] * PROMPT_TEXT + [991] * (n + 1) + [6] * QUERY_TEXT
    if model_type != "llava_onevision":
        # Positions do not change FLOPs; given, they spare the processor's token types.
        inputs["position_ids"] = torch.arange(len(ids)).expand(3, 1, -1)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(input_ids=torch.tensor([ids]), logits_to_keep=1, **inputs)
    counts = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    total = counts["Global"]
    lm = sum(v for name, v in counts.items() if name.endswith((".language_model", ".lm_head")))
    return {"vision": total - lm, "lm": lm, "prompt_length": len(ids)}


def count_scoring_pass() -> dict[str, float]:
    """The product's scoring pass (DecoderScoringPass to layer K = 2) over the stand-in
    decoder (bench/common/standin.py) under FlopCounterMode, one block of attention rows
    (the dense count the formula makes), and the formula for the same decoder."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from bench.common.standin import GQA_GROUP, HEAD_DIM, LAYERS_USED, MLP_RATIO, VOCAB, video_layout
    from bench.common.standin import Decoder as StandIn
    from sharp_plugin.core.blocked_attention import BlockBudget
    from sharp_plugin.core.masks import SegmentMask
    from sharp_plugin.vllm.scoring_pass import DecoderScoringPass

    hidden, groups, side, prefix, query = 256, 2, 8, PROMPT_TEXT, QUERY_TEXT
    torch.manual_seed(0)
    decoder = StandIn(hidden)
    layout = video_layout(groups, side, prefix=prefix, query=query)
    visual = torch.randn(groups * side * side, hidden, dtype=torch.bfloat16)
    scoring = DecoderScoringPass(decoder, LAYERS_USED - 1, layout, budget=BlockBudget(scratch_bytes=1 << 40))
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        scoring(visual, SegmentMask(0))
    heads = hidden // HEAD_DIM
    model = Decoder(
        hidden, round(hidden * MLP_RATIO), LAYERS_USED, heads, max(1, heads // GQA_GROUP), HEAD_DIM, VOCAB
    )
    length = prefix + visual.shape[0] + query
    predicted = model.scoring_pass(length, query - layout.query_from, LAYERS_USED - 1)
    return {"counted": counter.get_total_flops(), "predicted": predicted}


def validate() -> list[dict]:
    """The cost model against FlopCounterMode at a reduced size, per family and stage,
    and the scoring pass's formula against the product's pass."""
    scoring = count_scoring_pass()
    rows = [
        {
            "model": "stand-in decoder (reduced)",
            "stage": "scoring",
            **scoring,
            "error": scoring["predicted"] / scoring["counted"] - 1,
        }
    ]
    for name, config, video in reference_cases():
        counted = count_reference(config, video)
        model = Model.load(name, config)
        predicted = {
            "vision": model.vision.flops(video),
            "lm": model.decoder.prefill(counted["prompt_length"]),
        }
        for stage in ("vision", "lm"):
            rows.append(
                {
                    "model": name,
                    "stage": stage,
                    "counted": counted[stage],
                    "predicted": predicted[stage],
                    "error": predicted[stage] / counted[stage] - 1,
                }
            )
    return rows


# ---- tables -------------------------------------------------------------------------------
VIDEOS = {  # frames x processor resolution
    "Qwen2.5-VL-7B": [VideoShape(32, 448, 448), VideoShape(64, 448, 448), VideoShape(128, 336, 336)],
    "Qwen3-VL-8B": [VideoShape(32, 512, 512), VideoShape(64, 512, 512), VideoShape(128, 384, 384)],
    "LLaVA-OneVision-7B": [VideoShape(16, 384, 384), VideoShape(32, 384, 384), VideoShape(64, 384, 384)],
}
RETENTIONS = (0.5, 0.25, 0.1, 0.05)
K_LAYERS = (1, 2)


def operating_points(models: dict[str, Model]) -> list[dict]:
    """The largest retention at which our design (scoring pass included, black prior
    cached) cuts the LM's prefill FLOPs by 86%, per model, video and K."""
    points = []
    for name, model in models.items():
        for video in VIDEOS[name]:
            for k_layer in K_LAYERS:
                lo, hi = 1e-4, 1.0
                if model.stages(video, lo, k_layer)["lm_cut"] < 0.86:
                    points.append({"model": name, "video": video.__dict__, "K": k_layer, "retention": None})
                    continue
                for _ in range(40):
                    mid = (lo + hi) / 2
                    lo, hi = (mid, hi) if model.stages(video, mid, k_layer)["lm_cut"] >= 0.86 else (lo, mid)
                stages = model.stages(video, lo, k_layer)
                points.append(
                    {
                        "model": name,
                        "video": video.__dict__,
                        "video_tokens": stages["video_tokens"],
                        "K": k_layer,
                        "retention": lo,
                        "whole_speedup": stages["whole_speedup"],
                    }
                )
    return points


# The README's long-video example: an hour at 1 fps, 448 x 448, on Qwen2.5-VL-7B, 5% kept,
# K = 2, segments of 4 temporal groups.
HOUR = {"model": "Qwen2.5-VL-7B", "frames": 3600, "side": 448, "retention": 0.05, "K": 2, "segment_groups": 4}


def long_video_example(models: dict[str, Model]) -> dict:
    """FLOPs of each stage for HOUR: vision, the scoring pass under each mask, the pruned
    prefill, and what an unpruned prefill would cost (it does not fit any served context)."""
    model = models[HOUR["model"]]
    video = VideoShape(HOUR["frames"], HOUR["side"], HOUR["side"])
    n = model.vision.tokens(video)
    kept = max(1, math.floor(HOUR["retention"] * n + 0.5))
    t, h, w = model.vision.grid(video)
    segment = HOUR["segment_groups"] * (h // model.vision.merge) * (w // model.vision.merge)
    length = PROMPT_TEXT + n + QUERY_TEXT
    return {
        **HOUR,
        "video_tokens": n,
        "kept": kept,
        "prompt_tokens": PROMPT_TEXT + kept + QUERY_TEXT,
        "segment_tokens": segment,
        "vision": model.vision.flops(video),
        "scoring_block_causal": model.decoder.scoring_pass(length, QUERY_TEXT - 1, HOUR["K"]),
        "scoring_local": model.decoder.scoring_pass_local(PROMPT_TEXT, n, QUERY_TEXT, segment, HOUR["K"]),
        "pruned_prefill": model.decoder.prefill(PROMPT_TEXT + kept + QUERY_TEXT),
        "unpruned_prefill": model.decoder.prefill(length),
    }


SOURCES = ["bench/flops.py", "bench/data/model_configs"]


def markdown(report: dict) -> str:
    lines = [
        "# Analytical prefill FLOPs per stage",
        "",
        "Validation against FlopCounterMode (reduced-size models, Hugging Face transformers):",
        "",
        "| model | stage | counted | predicted | error |",
        "|---|---|---|---|---|",
    ]
    for row in report["validation"]:
        lines.append(
            f"| {row['model']} | {row['stage']} | {row['counted']:.4g} | {row['predicted']:.4g} "
            f"| {row['error']:+.3%} |"
        )
    for name in MODELS:
        lines += [
            "",
            f"## {name}: prefill TFLOPs per request (black prior cached), ours against unpruned",
            "",
            "| frames x px | N | r | K | vision | scoring | prior (miss) | LM | LM cut | LM x | whole x |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in (r for r in report["rows"] if r["model"] == name):
            video = row["video"]
            lines.append(
                f"| {video['frames']} x {video['height']} | {row['video_tokens']} | {row['retention']} "
                f"| {row['K']} | {row['vision'] / 1e12:.1f} | {row['scoring'] / 1e12:.1f} "
                f"| {row['prior_miss'] / 1e12:.1f} | {row['lm'] / 1e12:.1f} | {row['lm_cut']:.0%} "
                f"| {row['lm_speedup']:.1f} | {row['whole_speedup']:.2f} |"
            )
    lines += [
        "",
        "## Where our design reaches the paper's -86% LM prefill FLOPs (scoring pass included)",
        "",
        "| model | frames x px | N | K | largest r | whole-pipeline x there |",
        "|---|---|---|---|---|---|",
    ]
    for p in report["operating_points"]:
        video = p["video"]
        if p["retention"] is None:
            lines.append(
                f"| {p['model']} | {video['frames']} x {video['height']} | | {p['K']} | not reachable | |"
            )
        else:
            lines.append(
                f"| {p['model']} | {video['frames']} x {video['height']} | {p['video_tokens']} | {p['K']} "
                f"| {p['retention']:.3f} | {p['whole_speedup']:.2f} |"
            )
    hour = report["long_video"]
    lines += [
        "",
        f"An hour of video ({hour['frames']} frames of {hour['side']}^2, {hour['model']}): N = "
        f"{hour['video_tokens']}, {hour['kept']} kept at r = {hour['retention']}; PFLOPs: vision "
        f"{hour['vision'] / 1e15:.1f}, scoring pass block-causal {hour['scoring_block_causal'] / 1e15:.1f} / "
        f"segment-local {hour['scoring_local'] / 1e15:.2f}, pruned prefill "
        f"{hour['pruned_prefill'] / 1e15:.2f} (unpruned prefill {hour['unpruned_prefill'] / 1e15:.0f})",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--validate-only", action="store_true")
    add_output_arguments(parser)
    args = parser.parse_args()
    validation = validate()
    if args.validate_only:
        for row in validation:
            print(row)
        return
    models = load_models()
    table = []
    for name, model in models.items():
        for video in VIDEOS[name]:
            for retention in RETENTIONS:
                for k_layer in K_LAYERS:
                    s = model.stages(video, retention, k_layer)
                    miss = model.stages(video, retention, k_layer, prior="miss")
                    row = {"model": name, "video": video.__dict__, "retention": retention, "K": k_layer, **s}
                    row["prior_miss"] = miss["prior"]
                    row["whole_speedup_prior_miss"] = miss["whole_speedup"]
                    table.append(row)
    report = {
        "validation": validation,
        "rows": table,
        "operating_points": operating_points(models),
        "long_video": long_video_example(models),
    }
    write_report(output_dir(args, "flops"), "flops", report, markdown, sources=SOURCES)


if __name__ == "__main__":
    main()
