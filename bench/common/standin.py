"""A stand-in decoder with the calling convention of vLLM's Qwen2 decoder layers (what
the scoring pass calls: fused-add RMSNorm, packed QKV, rotary, o_proj, gate-up MLP), at
Qwen2.5-VL-7B's proportions (head dim 128, 7 query heads per KV head, intermediate /
hidden = 18944 / 3584) and any width, with random weights. vLLM's own layers cannot be
built outside an engine; their numerics are held to Hugging Face by the engine reference
tests (tests/plugin/test_engine_reference.py). Also: a video's scoring layout at the
real prompt's positions, for the scoring-pass benches."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sharp_plugin.vllm.positions import grid_positions
from sharp_plugin.vllm.scoring_layout import ItemLayout

HEAD_DIM, GQA_GROUP, MLP_RATIO = 128, 7, 18944 / 3584
HIDDEN_7B = 3584
LAYERS_USED = 3  # prune_layer 2: layers 0 and 1, and layer 2's Q and K
QUERY_TOKENS = 64  # a typical question's rows
VOCAB = 1000


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
    """Plain RoPE on the first position channel: enough to make positions matter."""

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
    def __init__(self, hidden: int, layers: int = LAYERS_USED):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, hidden, dtype=torch.bfloat16)
        self.layers = nn.ModuleList(Layer(hidden) for _ in range(layers))

    def embed_input_ids(self, ids):
        return self.embed(ids)


def video_layout(
    groups: int,
    side: int,
    *,
    prefix: int = 0,
    query: int = QUERY_TOKENS,
    t_scale: float = 2.0,
    generator: torch.Generator | None = None,
) -> ItemLayout:
    """[prefix text | a video of `groups` x side x side tokens | query text] with random
    ids, at stock M-RoPE positions (the text after the video from its grid's max + 1)."""
    video = torch.from_numpy(grid_positions(groups, side, side, t_scale)) + prefix  # [3, N]
    after = int(video.max()) + 1
    positions = torch.cat(
        [torch.arange(prefix).expand(3, -1), video, torch.arange(query).expand(3, -1) + after], dim=1
    )
    return ItemLayout(
        prefix_ids=torch.randint(0, VOCAB, (prefix,), generator=generator),
        suffix_ids=torch.randint(0, VOCAB, (query,), generator=generator),
        query_from=1,
        positions=positions,
        tokens_per_group=side * side,
    )
