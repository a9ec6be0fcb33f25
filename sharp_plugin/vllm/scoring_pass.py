"""The scoring pass: the loaded model's own first K decoder layers, run outside vLLM's
forward over [prefix | visual | query] for each video, scoring at layer K. The videos
embedded in one step are scored together (`score_together`).

It calls the layers' submodules directly. Only `Attention` needs vLLM's forward context
(it reads the KV cache), so attention itself is plain matmuls here; norms, projections,
rotary embedding and MLP are the model's own, so quantised or sharded weights work as
they do in the real forward.

Tensor parallelism: q/k/v hold num_heads / tp heads on each rank and o_proj / down_proj
all-reduce, so every rank runs this with the same shapes (each rank embeds the same
items). At layer K the per-head sums are all-reduced before averaging over all heads,
so every rank selects the same tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from sharp_plugin.core import ScoringResult
from sharp_plugin.core.blocked_attention import (
    DEFAULT_BUDGET,
    BlockBudget,
    blocked_attention,
    query_attention_sums_blocked,
)
from sharp_plugin.core.masks import SegmentMask, Visibility, visibility
from sharp_plugin.core.scores import mean_visual_scores

from .scoring_layout import ItemLayout

# Rows per norm, projection and MLP call: [1024, 2 * intermediate] scratch at most. The
# pass runs outside vLLM's forward, so its scratch must stay bounded whatever N is (and
# the memory profile reserves it: see memory_profile.py).
ROW_BLOCK = 1024


class DecoderScoringPass:
    """ScoringPass (see sharp_plugin.core.policy) over a Qwen2-style decoder stack, for
    one video."""

    def __init__(
        self,
        decoder: nn.Module,  # has .embed_input_ids and .layers (vLLM Qwen2Model et al.)
        prune_layer: int,
        layout: ItemLayout,
        tp_size: int = 1,
        budget: BlockBudget = DEFAULT_BUDGET,
    ):
        self.decoder = decoder
        self.prune_layer = prune_layer
        self.layout = layout
        self.tp_size = tp_size
        self.budget = budget

    def __call__(self, visual: torch.Tensor, mask: SegmentMask) -> ScoringResult:
        (result,) = score_together(
            self.decoder,
            self.prune_layer,
            [ScoringItem(self.layout, visual, mask)],
            self.tp_size,
            self.budget,
        )
        return result


@dataclass(frozen=True)
class ScoringItem:
    layout: ItemLayout
    visual: torch.Tensor  # [N, D] the video's visual embeddings
    mask: SegmentMask  # how its visual tokens see each other (sharp_plugin/core/masks.py)


@torch.inference_mode()
def score_together(
    decoder: nn.Module,
    prune_layer: int,
    items: Sequence[ScoringItem],
    tp_size: int = 1,
    budget: BlockBudget = DEFAULT_BUDGET,
) -> list[ScoringResult]:
    """The scoring pass of several videos at once, each over its own [prefix | visual |
    query] sequence, all scored at the same layer K.

    The sequences are packed into one: norms, projections, rotary embedding and MLP run
    as one call over all rows (on a GPU, one launch each instead of one per video, and
    full-width GEMMs for short videos), while attention runs over each sequence's own
    slice, so no row sees another video. Each result is what a pass over that video
    alone gives, up to the rounding of a GEMM of a different height.
    """
    device = items[0].visual.device
    embed = decoder.embed_input_ids
    pieces, spans, position_columns, deep_rows = [], [], [], []
    start = 0
    for item in items:
        layout = item.layout
        # Host-to-device copies are non_blocking: a blocking one waits for the device to
        # finish everything queued before it (here, the vision tower), so the host could
        # not queue this pass's kernels behind it. Nothing here copies device to host.
        prefix_text = embed(layout.prefix_ids.to(device, non_blocking=True))
        width = prefix_text.shape[-1]
        prefix, prefix_deep = _with_media(prefix_text, layout.prefix_media)
        visual, visual_deep = _split_deepstack(item.visual.to(prefix.dtype), width)
        suffix = embed(layout.suffix_ids.to(device, non_blocking=True))
        query_from = layout.query_from
        if layout.appended_rows is not None:  # they open the suffix; the query starts after them
            suffix = torch.cat([layout.appended_rows.to(device=device, dtype=suffix.dtype), suffix])
            query_from += layout.appended_rows.shape[0]
        rows, visual_index, groups = layout.item_rows, None, None
        if rows is not None:  # text rows inside the item: scatter both kinds into place
            visual_index = rows.visual_rows.to(device, non_blocking=True)
            block = visual.new_empty(rows.num_rows, width)
            block[visual_index] = visual
            text_ids = rows.text_ids.to(device, non_blocking=True)
            block[rows.text_rows.to(device, non_blocking=True)] = embed(text_ids)
            visual, groups = block, rows.groups
        pieces += [prefix, visual, suffix]
        num_prefix, num_item, num_suffix = prefix.shape[0], visual.shape[0], suffix.shape[0]
        if prefix_deep is not None or visual_deep is not None:
            deep_rows.append((start, prefix_deep, start + num_prefix, visual_deep, visual_index))
        length = num_prefix + num_item + num_suffix
        seen = visibility(
            num_prefix, num_item, num_suffix, layout.tokens_per_group, item.mask, item_groups=groups
        )
        spans.append(_Span(start, num_prefix, num_item, length, query_from, seen, visual_index))
        position_columns.append(layout.positions)
        start += length
    # Fresh tensors: fused RMSNorm with a residual updates its inputs in place.
    x = torch.cat(pieces, dim=0)  # [L, D], L summed over the videos
    seq_len = x.shape[0]
    positions = torch.cat(position_columns, dim=-1).to(device, non_blocking=True)  # [3, L] or [L] (1-D)
    deepstack = _packed_deepstack(deep_rows, seq_len, x)  # [levels, L, D] or None

    # Layer by layer; everything but attention runs a block of rows at a time, so what
    # persists across a layer is [L, D]-wide at most three times: the residual stream,
    # the layer's output `x`, and Q (whose buffer then takes attention's output), plus
    # K and V ([L, kv] each). The whole-sequence tensors of the plain forward (normed
    # hidden states, QKV, attention and projection outputs, the MLP's result before its
    # concatenation) would be seven or more. Blocking changes no value: every op but
    # attention is row-wise.
    residual, x = x, None  # the embeddings are the residual stream entering layer 0
    for index in range(prune_layer + 1):
        layer = decoder.layers[index]
        attn = layer.self_attn
        q = residual.new_empty(seq_len, attn.num_heads, attn.head_dim)
        k = residual.new_empty(seq_len, attn.num_kv_heads, attn.head_dim)
        v = torch.empty_like(k)
        for rows in _row_blocks(seq_len):
            if x is None:
                h = layer.input_layernorm(residual[rows])
            else:
                h, added = layer.input_layernorm(x[rows], residual[rows])
                _write_rows(residual, rows, added)
            q[rows], k[rows], v[rows] = _project_qkv(attn, h, positions[..., rows])
        if index == prune_layer:
            return _scores_at_layer_k(
                attn, q.transpose(0, 1), k.transpose(0, 1), residual, spans, tp_size, budget
            )
        _attend_spans(attn, q, k, v, spans, budget)
        attended = q.view(seq_len, -1)
        if x is None:
            x = torch.empty_like(residual)
        for rows in _row_blocks(seq_len):
            out, _ = attn.o_proj(attended[rows])
            h, added = layer.post_attention_layernorm(out, residual[rows])
            _write_rows(residual, rows, added)
            x[rows] = layer.mlp(h)
            if deepstack is not None and index < deepstack.shape[0]:
                # As the model's forward adds it after this layer (Qwen3-VL).
                x[rows] += deepstack[index, rows]
        # Freed before the next layer makes its own: held through that allocation, they
        # were a second Q, K and V at the peak (measured by bench/scoring_memory.py).
        del q, k, v, attended
    raise AssertionError("unreachable: the loop returns at prune_layer")


def _attend_spans(
    attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spans: Sequence[_Span], budget: BlockBudget
) -> None:
    """Each video's attention over its own rows, written over Q's rows (each block of rows
    is read before it is written, and no other block reads it), in o_proj's input layout."""
    for span in spans:
        span_q, span_k, span_v = (t[span.rows].transpose(0, 1) for t in (q, k, v))
        blocked_attention(
            span_q, span_k, span_v, attn.scaling, span.visibility, out=q[span.rows], budget=budget
        )


@dataclass(frozen=True)
class _Span:
    """One video's rows in the packed sequence."""

    start: int
    num_prefix: int
    num_item: int  # the item's rows: its visual tokens, and any text rows among them
    length: int
    query_from: int  # first suffix row that is a query row
    visibility: Visibility  # each row's visible columns, within the span
    visual_index: torch.Tensor | None = None  # [N] the visual tokens' rows within the item (None: all)

    @property
    def first_query_row(self) -> int:  # within the span
        return self.num_prefix + self.num_item + self.query_from

    @property
    def rows(self) -> slice:
        return slice(self.start, self.start + self.length)

    def visual_of(self, values: torch.Tensor, offset: int) -> torch.Tensor:
        """The visual tokens' entries of `values`, whose row 0 is this span's row `offset`
        (0 for a span-local tensor, `start` for a packed one)."""
        first = offset + self.num_prefix
        item = values[first : first + self.num_item]
        return item if self.visual_index is None else item[self.visual_index]


def _scores_at_layer_k(
    attn, q, k, residual, spans: Sequence[_Span], tp_size: int, budget: BlockBudget
) -> list[ScoringResult]:
    """Each video's query attention to its visual tokens at layer K, and their hidden
    states entering layer K (`residual`, after the fused add)."""
    sums = []
    for span in spans:
        rows = torch.arange(span.first_query_row, span.length, device=q.device)
        span_q, span_k = q[:, span.rows], k[:, span.rows]
        sums.append(query_attention_sums_blocked(span_q, span_k, rows, attn.scaling, budget))  # [L_i]
    if tp_size > 1:  # one all-reduce for every video's per-head sums
        from vllm.distributed import tensor_model_parallel_all_reduce

        sums = tensor_model_parallel_all_reduce(torch.cat(sums)).split([span.length for span in spans])
    total_heads = attn.num_heads * tp_size
    results = []
    for span, item_sums in zip(spans, sums, strict=True):
        num_query = span.length - span.first_query_row
        visual_sums = span.visual_of(item_sums, 0)
        scores = mean_visual_scores(visual_sums, total_heads, num_query, 0, visual_sums.numel())
        results.append(ScoringResult(scores, span.visual_of(residual, span.start)))
    return results


def _with_media(
    prefix: torch.Tensor, media: tuple[tuple[int, torch.Tensor], ...]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The prefix embeddings with each media slot row replaced by that item's rows, and
    those rows' deepstack features (# [P, levels, D], zeros on text) when they carry any."""
    if not media:
        return prefix, None
    width = prefix.shape[-1]
    pieces, deep_pieces, start = [], [], 0
    for slot, rows in media:
        main, deep = _split_deepstack(rows.to(device=prefix.device, dtype=prefix.dtype), width)
        pieces += [prefix[start:slot], main]
        deep_pieces += [(slot - start, None), (main.shape[0], deep)]
        start = slot + 1
    pieces.append(prefix[start:])
    deep_pieces.append((prefix.shape[0] - start, None))
    levels = max((d.shape[1] for _, d in deep_pieces if d is not None), default=0)
    if not levels:
        return torch.cat(pieces), None
    deep = torch.cat([d if d is not None else prefix.new_zeros(n, levels, width) for n, d in deep_pieces])
    return torch.cat(pieces), deep


def _split_deepstack(rows: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rows wider than the decoder carry deepstack features after their embedding
    (Qwen3-VL: [D | level 0 | level 1 | ...], the vision tower's output layout).
    # ([n, D], [n, levels, D] or None)"""
    if rows.shape[-1] == width:
        return rows, None
    return rows[:, :width], rows[:, width:].view(rows.shape[0], -1, width)


def _packed_deepstack(deep_rows, seq_len: int, like: torch.Tensor) -> torch.Tensor | None:
    """The packed sequence's deepstack features # [levels, L, D], zeros on rows without
    any; None when no row has them (every family but Qwen3-VL)."""
    if not deep_rows:
        return None
    levels = max(d.shape[1] for entry in deep_rows for d in (entry[1], entry[3]) if d is not None)
    deepstack = like.new_zeros(levels, seq_len, like.shape[-1])
    for prefix_start, prefix_deep, item_start, visual_deep, visual_index in deep_rows:
        if prefix_deep is not None:
            deepstack[: prefix_deep.shape[1], prefix_start : prefix_start + prefix_deep.shape[0]] = (
                prefix_deep.transpose(0, 1)
            )
        if visual_deep is not None:
            rows = visual_index
            if rows is None:
                rows = torch.arange(visual_deep.shape[0], device=like.device)
            deepstack[: visual_deep.shape[1], item_start + rows] = visual_deep.transpose(0, 1)
    return deepstack


def _project_qkv(attn: nn.Module, h: torch.Tensor, positions: torch.Tensor):
    """Q, K and V of a block of rows, rotary embedding applied. # [rows, H, d], [rows, H_kv, d] x2"""
    qkv, _ = attn.qkv_proj(h)
    q, k, v = qkv.split([attn.q_size, attn.kv_size, attn.kv_size], dim=-1)
    rows = h.shape[0]
    if getattr(attn, "q_norm", None) is not None:  # Qwen3 / qk-norm variants: per head
        q = attn.q_norm(q.reshape(rows, attn.num_heads, attn.head_dim)).view(rows, -1)
        k = attn.k_norm(k.reshape(rows, attn.num_kv_heads, attn.head_dim)).view(rows, -1)
    q, k = attn.rotary_emb(positions.contiguous(), q, k)
    return (
        q.reshape(rows, attn.num_heads, attn.head_dim),
        k.reshape(rows, attn.num_kv_heads, attn.head_dim),
        v.reshape(rows, attn.num_kv_heads, attn.head_dim),
    )


def _row_blocks(num_rows: int):
    return (slice(start, start + ROW_BLOCK) for start in range(0, num_rows, ROW_BLOCK))


def _write_rows(target: torch.Tensor, rows: slice, value: torch.Tensor) -> None:
    """target[rows] = value, unless value already is those rows (fused add-norm kernels
    update the residual in place; the native path returns a new tensor)."""
    if value.data_ptr() != target[rows].data_ptr():
        target[rows] = value
