"""The scoring pass: the loaded model's own first K decoder layers, run outside vLLM's
forward over [prefix | visual | query] for one video, scoring at layer K.

It calls the layers' submodules directly. Only `Attention` needs vLLM's forward context
(it reads the KV cache), so attention itself is plain SDPA here; norms, projections,
rotary embedding and MLP are the model's own, so quantised or sharded weights work as
they do in the real forward.

Tensor parallelism: q/k/v hold num_heads / tp heads on each rank and o_proj / down_proj
all-reduce, so every rank runs this with the same shapes (each rank embeds the same
items). At layer K the per-head sums are all-reduced before averaging over all heads,
so every rank selects the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sharp_plugin.core import ScoringResult
from sharp_plugin.core.masks import visibility_end
from sharp_plugin.core.scores import mean_visual_scores, query_attention_sums

# Rows of the segment-masked attention per SDPA call: bounds the [H, rows, L] scratch
# that an explicit mask forces (the causal case uses SDPA's is_causal and no mask).
_MASKED_ROW_BLOCK = 1024


@dataclass(frozen=True)
class ItemLayout:
    prefix_ids: torch.Tensor  # [P] long: prompt text before the video
    suffix_ids: torch.Tensor  # [S] long: prompt text after the video
    query_from: int  # first suffix row that is a query row (skips <|vision_end|>)
    positions: torch.Tensor  # [3, P + N + S] long: the real prompt's M-RoPE positions
    tokens_per_group: int  # visual tokens per temporal group (H * W after merging)


class DecoderScoringPass:
    """ScoringPass (see sharp_plugin.core.policy) over a Qwen2-style decoder stack."""

    def __init__(
        self,
        decoder: nn.Module,  # has .embed_input_ids and .layers (vLLM Qwen2Model et al.)
        prune_layer: int,
        layout: ItemLayout,
        tp_size: int = 1,
    ):
        self.decoder = decoder
        self.prune_layer = prune_layer
        self.layout = layout
        self.tp_size = tp_size

    @torch.inference_mode()
    def __call__(self, visual: torch.Tensor, segment_groups: int) -> ScoringResult:
        layout, device = self.layout, visual.device
        embed = self.decoder.embed_input_ids
        prefix = embed(layout.prefix_ids.to(device))
        suffix = embed(layout.suffix_ids.to(device))
        # Fresh tensors: fused RMSNorm with a residual updates its inputs in place.
        x = torch.cat([prefix, visual.to(prefix.dtype), suffix], dim=0)  # [L, D]
        num_prefix, num_visual = prefix.shape[0], visual.shape[0]
        seq_len = x.shape[0]
        positions = layout.positions.to(device)
        end = visibility_end(num_prefix, num_visual, suffix.shape[0], layout.tokens_per_group, segment_groups)

        residual = None
        for index in range(self.prune_layer + 1):
            layer = self.decoder.layers[index]
            if residual is None:
                residual = x
                h = layer.input_layernorm(x)
            else:
                h, residual = layer.input_layernorm(x, residual)
            attn = layer.self_attn
            q, k, v = _project_qkv(attn, h, positions)  # [H, L, d], [H_kv, L, d] x2
            if index == self.prune_layer:
                rows = torch.arange(num_prefix + num_visual + layout.query_from, seq_len, device=device)
                sums = query_attention_sums(q[:, rows], k, rows, attn.scaling)  # [L]
                if self.tp_size > 1:
                    from vllm.distributed import tensor_model_parallel_all_reduce

                    sums = tensor_model_parallel_all_reduce(sums)
                total_heads = attn.num_heads * self.tp_size
                scores = mean_visual_scores(sums, total_heads, rows.numel(), num_prefix, num_visual)
                # residual is the hidden state entering layer K (after the fused add).
                hidden = residual[num_prefix : num_prefix + num_visual]
                return ScoringResult(scores, hidden)
            out = _attention(q, k, v, attn.scaling, end if segment_groups > 0 else None)
            out = out.transpose(0, 1).reshape(seq_len, -1)
            out, _ = attn.o_proj(out)
            h, residual = layer.post_attention_layernorm(out, residual)
            x = layer.mlp(h)
        raise AssertionError("unreachable: the loop returns at prune_layer")


def _project_qkv(attn: nn.Module, h: torch.Tensor, positions: torch.Tensor):
    qkv, _ = attn.qkv_proj(h)
    q, k, v = qkv.split([attn.q_size, attn.kv_size, attn.kv_size], dim=-1)
    seq_len = h.shape[0]
    if getattr(attn, "q_norm", None) is not None:  # Qwen3 / qk-norm variants: per head
        q = attn.q_norm(q.view(seq_len, attn.num_heads, attn.head_dim)).view(seq_len, -1)
        k = attn.k_norm(k.view(seq_len, attn.num_kv_heads, attn.head_dim)).view(seq_len, -1)
    q, k = attn.rotary_emb(positions, q, k)
    return (
        q.view(seq_len, attn.num_heads, attn.head_dim).transpose(0, 1),
        k.view(seq_len, attn.num_kv_heads, attn.head_dim).transpose(0, 1),
        v.view(seq_len, attn.num_kv_heads, attn.head_dim).transpose(0, 1),
    )


def _attention(q, k, v, scale: float, end: torch.Tensor | None) -> torch.Tensor:
    """SDPA over all rows; causal, or segment-aware when `end` is given. # [H, L, d]"""
    group = q.shape[0] // k.shape[0]
    k = k.repeat_interleave(group, dim=0)
    v = v.repeat_interleave(group, dim=0)
    if end is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    end = end.to(q.device)
    cols = torch.arange(k.shape[1], device=q.device)
    blocks = []
    for start in range(0, q.shape[1], _MASKED_ROW_BLOCK):
        stop = min(start + _MASKED_ROW_BLOCK, q.shape[1])
        mask = cols[None, :] <= end[start:stop, None]  # [rows, L]
        blocks.append(F.scaled_dot_product_attention(q[:, start:stop], k, v, attn_mask=mask, scale=scale))
    return torch.cat(blocks, dim=1)
