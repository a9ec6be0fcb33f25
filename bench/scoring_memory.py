"""Peak extra memory of one ShaRP selection (scoring pass to layer K, mean prior, dedup)
at N = 16k video tokens, for a Qwen2.5-VL-7B-shaped decoder, measured at reduced widths
and scaled.

Usage: python bench/scoring_memory.py [--tokens 16384] [--widths 256 512 768]
       python bench/scoring_memory.py --small   # CI: sharp's bounded pass, 8k tokens
The product's own `DecoderScoringPass` and `select_tokens` run over stand-in decoder
layers that have vLLM's Qwen2 layer interface (fused-add RMSNorm, packed QKV, o_proj,
gate-up MLP; plain RoPE on the first position channel) at 7B's proportions: head
dim 128, 7 query heads per KV head, intermediate / hidden = 18944 / 3584. Memory is the
process's peak RSS (Linux VmHWM, reset before each run) above its RSS before the run, so
kernel scratch counts too; the allocator returns what is freed (LIVE_MEMORY below). The
extra memory is linear in the width at fixed N, so a least-squares line through the
reduced widths gives the 7B figure (hidden 3584).
Each width runs twice: with the bounded (row-blocked) pass, and with the blocks made as
large as the sequence, which is what the pass did before.
Writes scoring_memory.json (scoring_memory-small.json) to --out, bench/results by default.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HEAD_DIM, GQA_GROUP, MLP_RATIO = 128, 7, 18944 / 3584
HIDDEN_7B, LAYERS_USED, QUERY_TOKENS = 3584, 3, 64  # prune_layer 2: layers 0, 1 and 2's QK


class RMSNorm(nn.Module):
    """vLLM's interface: norm(x) or norm(x, residual) -> (normed, x + residual)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim, dtype=torch.bfloat16))

    def forward(self, x, residual=None):
        if residual is not None:
            x = x + residual
            residual = x
        normed = F.rms_norm(x, (x.shape[-1],), self.weight, 1e-6)
        return normed if residual is None else (normed, residual)


class Linear(nn.Linear):
    """vLLM's parallel linears return (output, bias)."""

    def forward(self, x):
        return super().forward(x), None


class Rotary(nn.Module):
    def forward(self, positions, q, k):
        pos = positions[0].float()[:, None]  # [L, 1]
        freqs = 1.0 / (10000 ** (torch.arange(0, HEAD_DIM, 2, dtype=torch.float32) / HEAD_DIM))
        cos, sin = (pos * freqs).cos(), (pos * freqs).sin()  # [L, d/2]

        def rotate(x):
            x = x.view(x.shape[0], -1, HEAD_DIM)
            a, b = x[..., : HEAD_DIM // 2].float(), x[..., HEAD_DIM // 2 :].float()
            out = torch.cat([a * cos[:, None] - b * sin[:, None], a * sin[:, None] + b * cos[:, None]], -1)
            return out.to(torch.bfloat16).flatten(1)

        return rotate(q), rotate(k)


class Attention(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.num_heads = hidden // HEAD_DIM
        self.num_kv_heads = max(1, self.num_heads // GQA_GROUP)
        self.head_dim = HEAD_DIM
        self.q_size, self.kv_size = self.num_heads * HEAD_DIM, self.num_kv_heads * HEAD_DIM
        self.scaling = HEAD_DIM**-0.5
        self.qkv_proj = Linear(hidden, self.q_size + 2 * self.kv_size, dtype=torch.bfloat16)
        self.o_proj = Linear(self.q_size, hidden, bias=False, dtype=torch.bfloat16)
        self.rotary_emb = Rotary()


class MLP(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        inner = round(hidden * MLP_RATIO)
        self.gate_up_proj = nn.Linear(hidden, 2 * inner, bias=False, dtype=torch.bfloat16)
        self.down_proj = nn.Linear(inner, hidden, bias=False, dtype=torch.bfloat16)

    def forward(self, x):
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class Layer(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.input_layernorm, self.post_attention_layernorm = RMSNorm(hidden), RMSNorm(hidden)
        self.self_attn, self.mlp = Attention(hidden), MLP(hidden)


class Decoder(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.embed = nn.Embedding(1000, hidden, dtype=torch.bfloat16)
        self.layers = nn.ModuleList(Layer(hidden) for _ in range(LAYERS_USED))

    def embed_input_ids(self, ids):
        return self.embed(ids)


# The children's allocator: every allocation over 64 KiB gets its own mapping, unmapped
# when freed, so peak RSS follows the live tensors (and the kernels' scratch). With
# glibc's default, its dynamic mmap threshold moves freed [N, D] blocks into the heap,
# which keeps them: that slack was over a third of the peak at hidden 768 (225 MiB
# against 145 live) and swung from run to run. What a GPU's caching allocator adds is its
# own matter; this measures what the pass needs.
LIVE_MEMORY = {"MALLOC_MMAP_THRESHOLD_": str(64 << 10)}


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


METHODS = {
    "sharp": {"method": "sharp", "retention": 0.1, "debias": "mean", "segment_frames": 4},
    "fastv": {"method": "fastv", "retention": 0.1},  # plain causal mask, no prior, no dedup
}


def measure(hidden: int, tokens: int, bounded: bool, method: str) -> dict:
    """One selection in this process; returns its peak extra RSS in MiB."""
    import sharp_plugin.vllm.scoring_pass as scoring_pass
    from sharp_plugin.core import SharpSettings, select_tokens
    from sharp_plugin.vllm.scoring_pass import DecoderScoringPass, ItemLayout

    heads = hidden // HEAD_DIM
    if not bounded:
        # The pass as it was before: the MLP over the whole sequence; attention rows in
        # blocks of 1024 with the segment mask, in one unblocked is_causal call without
        # (it also copied K and V per head, which this does not reproduce).
        scoring_pass._ROW_BLOCK = 1 << 30
        masked = METHODS[method].get("segment_frames", 0) > 0
        rows = 1024 if masked else 1 << 30
        scoring_pass._SCRATCH_BYTES = scoring_pass._TEMPORARIES * 4 * heads * (tokens + QUERY_TOKENS) * rows
    torch.manual_seed(0)
    with torch.inference_mode():
        decoder = Decoder(hidden)
        grid_side = 16  # 16 x 16 tokens per temporal group
        groups = tokens // (grid_side * grid_side)
        n = groups * grid_side * grid_side
        t, h, w = torch.meshgrid(
            torch.arange(groups), torch.arange(grid_side), torch.arange(grid_side), indexing="ij"
        )
        video_positions = torch.stack([t.flatten() * 2, h.flatten(), w.flatten()])  # [3, N]
        suffix = torch.randint(0, 1000, (QUERY_TOKENS,))
        start = int(video_positions.max()) + 1
        positions = torch.cat([video_positions, torch.arange(QUERY_TOKENS).expand(3, -1) + start], dim=1)
        layout = ItemLayout(
            prefix_ids=torch.zeros(0, dtype=torch.long),
            suffix_ids=suffix,
            query_from=1,
            positions=positions,
            tokens_per_group=grid_side * grid_side,
        )
        visual = torch.randn(n, hidden, dtype=torch.bfloat16)
        settings = SharpSettings(**METHODS[method])
        scorer = DecoderScoringPass(decoder, 2, layout)
        # Warm-up at a small size: allocator pools and kernels' own one-time buffers.
        small = ItemLayout(layout.prefix_ids, suffix, 1, positions[:, : 256 + QUERY_TOKENS], 256)
        select_tokens(settings, visual[:256], DecoderScoringPass(decoder, 2, small))
        gc.collect()
        before = rss_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        selection = select_tokens(settings, visual, scorer)
        peak = rss_kib("VmHWM")
    assert selection.kept.numel() == round(0.1 * n)
    extra = (peak - before) / 1024
    return {"method": method, "hidden": hidden, "tokens": n, "bounded": bounded, "peak_extra_mib": extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 512, 768])
    # The unbounded causal pass needs [H, L, L] logits: 15 GB at 768 wide.
    parser.add_argument("--before-widths", type=int, nargs="+", default=[256, 384, 512])
    parser.add_argument(
        "--small", action="store_true", help="CI: sharp's bounded pass at 8k tokens, widths 256 and 768"
    )
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--out", type=Path, default=REPO / "bench/results", help="output directory")
    args = parser.parse_args()
    if args.one:
        hidden, tokens, bounded, method = int(args.one[0]), int(args.one[1]), args.one[2] == "1", args.one[3]
        print(json.dumps(measure(hidden, tokens, bounded, method)))
        return
    methods, passes, name = list(METHODS), (True, False), "scoring_memory"
    if args.small:
        args.tokens, args.widths, methods, passes = 8192, [256, 768], ["sharp"], (True,)
        name += "-small"
    rows = []
    for method in methods:
        for bounded in passes:
            for hidden in args.widths if bounded else args.before_widths:
                # A fresh process per point: peak RSS is per process.
                command = [
                    sys.executable,
                    __file__,
                    "--one",
                    str(hidden),
                    str(args.tokens),
                    str(int(bounded)),
                ]
                env = {**os.environ, **LIVE_MEMORY}
                out = subprocess.run(
                    command + [method], check=True, capture_output=True, text=True, env=env
                ).stdout
                rows.append(json.loads(out.strip().splitlines()[-1]))
                print(rows[-1])
    summary = {}
    for method in methods:
        for bounded in passes:
            points = [
                (r["hidden"], r["peak_extra_mib"])
                for r in rows
                if r["bounded"] == bounded and r["method"] == method
            ]
            slope, intercept = np.polyfit([p[0] for p in points], [p[1] for p in points], 1)
            summary[f"{method}, {'bounded' if bounded else 'before'}"] = {
                "mib_per_hidden_unit": slope,
                "bytes_per_token_per_hidden_unit": slope * 2**20 / (args.tokens + QUERY_TOKENS),
                "intercept_mib": intercept,
                "qwen25vl_7b_mib": slope * HIDDEN_7B + intercept,
            }
    result = {
        "tokens": args.tokens,
        "what": "peak extra RSS of one select_tokens at K=2, r=0.1: sharp (segment mask, mean prior, "
        "dedup) and fastv (causal); before = the pass without row blocks",
        "methods": METHODS,
        "rows": rows,
        "scaled_to_hidden_3584": summary,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2))
    print(f"\nN = {args.tokens}: peak extra memory of one selection, scaled to Qwen2.5-VL-7B (hidden 3584)")
    print("| method, pass | MiB per hidden unit | bytes per token per hidden unit | 7B-shaped (MiB) |")
    print("|---|---|---|---|")
    for label, row in summary.items():
        print(
            f"| {label} | {row['mib_per_hidden_unit']:.3f} | {row['bytes_per_token_per_hidden_unit']:.1f}"
            f" | {row['qwen25vl_7b_mib']:.0f} |"
        )


if __name__ == "__main__":
    main()
