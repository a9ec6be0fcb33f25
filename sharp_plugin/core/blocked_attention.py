"""Attention of every row over the columns its segment mask lets it see, computed in row
blocks whose scratch stays under a fixed budget whatever the sequence length. Plain
PyTorch: the scoring pass (sharp_plugin/vllm/scoring_pass.py) runs it between the
model's own projections, where vLLM's attention kernels cannot run (they need a forward
context and return no probabilities)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import torch

from .masks import Visibility, attention_mask
from .scores import query_attention_sums

# Two [H, rows, columns] float32 temporaries per block at most: the logits, then the
# probabilities.
TEMPORARIES = 2


@dataclass(frozen=True)
class BlockBudget:
    """How big a block of attention rows may be.

    Small blocks are also fast: at L = 4k and 4 heads, blocks of about 128 rows ran 3.8x
    faster than blocks of 2,000 on CPU (the logits stay in cache). The floor keeps the
    number of calls sane on wide models (28 heads at L = 16k: 64 rows is 235 MB)."""

    scratch_bytes: int = 16 << 20
    min_rows: int = 64

    def cells(self, num_heads: int) -> int:
        """Logits per block (rows x columns) within the scratch budget."""
        return self.scratch_bytes // (TEMPORARIES * 4 * num_heads)

    def rows(self, num_heads: int, num_cols: int) -> int:
        """Rows per block when every row reaches `num_cols` columns."""
        return max(self.min_rows, self.cells(num_heads) // max(1, num_cols))


DEFAULT_BUDGET = BlockBudget()


def query_attention_sums_blocked(
    q: torch.Tensor, k: torch.Tensor, rows: torch.Tensor, scale: float, budget: BlockBudget = DEFAULT_BUDGET
) -> torch.Tensor:
    """`query_attention_sums` over the query `rows` of q # [H, L, d], in blocks of rows.
    k # [H_kv, L, d]. # [L] float32"""
    step = budget.rows(q.shape[0], k.shape[1])
    sums = torch.zeros(k.shape[1], dtype=torch.float32, device=k.device)
    for start in range(0, rows.numel(), step):
        block = rows[start : start + step]
        sums += query_attention_sums(q[:, block], k, block, scale)
    return sums


def blocked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    seen: Visibility | torch.Tensor,
    out: torch.Tensor | None = None,
    budget: BlockBudget = DEFAULT_BUDGET,
) -> torch.Tensor:
    """Attention over all rows, each row seeing the columns its `seen` allows (causal,
    block-causal or segment-local; a tensor is the rows' last visible columns, causal
    style). q # [H, L, d], k and v # [H_kv, L, d]. # [H, L, d] in q's dtype, written into
    `out` ([L, H, d]) if given.

    Plain matmuls in the model's dtype, as the real forward's attention kernels run them
    (bf16 inputs, fp32 accumulation): on CPU, float32 copies made this 3x slower for a
    0.4% -> 0.16% relative error that the ranking does not need. Rows go in blocks, so a
    block's logits ([H, rows, columns]) stay under the budget whatever L is, and each
    block computes only the columns its rows can reach: up to the block's largest end,
    and, when every row of the block is segment-local, only the prefix and the columns
    from the block's first segment on. So under the segment-local mask a row costs
    O(prefix + segment), not O(L), and the pass is linear in the video's length.
    Only the columns that some row of the block cannot see are masked: in a causal or
    block-causal layout every row sees all columns before the block's smallest `end`,
    so the mask is a [rows, <= rows] strip, not [rows, L]. Grouped-query heads are viewed
    as [H_kv, G * rows] rows of their KV head, so K and V are never copied per head
    (except a segment-local block's gathered columns). SDPA is not used: with any mask
    (and even with is_causal + enable_gqa) it ran 4-10x slower than this on CPU in
    torch 2.13.
    """
    num_heads, seq_len, head_dim = q.shape
    num_kv_heads = k.shape[0]
    group = num_heads // num_kv_heads
    if isinstance(seen, torch.Tensor):
        seen = Visibility(torch.zeros_like(seen), seen, 0)
    keys_t = k.transpose(1, 2).contiguous()  # [H_kv, d, L]: one copy per layer, not per block
    q_grouped = q.view(num_kv_heads, group, seq_len, head_dim)
    if out is None:
        out = q.new_empty(seq_len, num_heads, head_dim)
    target = out.permute(1, 0, 2).view(num_kv_heads, group, seq_len, head_dim)  # a view: writes land in out
    # The block bounds below are host ints: read from host copies.
    end, begin, prefix = seen.end.cpu(), seen.begin.cpu(), seen.prefix_len
    # The masks are built from device copies, made once without waiting on the device.
    end_on_device = end.to(q.device, non_blocking=True)
    begin_on_device = begin.to(q.device, non_blocking=True)
    breaks = _block_breaks(begin, prefix)
    cells = budget.cells(num_heads)
    ends = end.tolist()
    start = 0
    while start < seq_len:
        limit = breaks[bisect.bisect_right(breaks, start)]
        skipped = max(0, int(begin[start]) - prefix)
        stop = block_stop(start, limit, ends, skipped, cells, budget.min_rows)
        rows = stop - start
        block_end, block_begin = end[start:stop], begin[start:stop]
        reach = int(block_end.max()) + 1  # no row of the block sees past this
        block = q_grouped[:, :, start:stop].reshape(num_kv_heads, group * rows, head_dim) * scale
        skips = bool((block_begin > prefix).any())  # some row skips columns after the prefix
        low = max(prefix, int(block_begin.min()))  # no row of the block sees [prefix, low)
        if low > prefix:  # every row is segment-local: gather the prefix and [low, reach)
            columns = torch.cat(
                [torch.arange(prefix, device=q.device), torch.arange(low, reach, device=q.device)]
            )
            keys, values = keys_t[:, :, columns], v[:, columns]
        else:
            columns, keys, values = None, keys_t[:, :, :reach], v[:, :reach]
        logits = torch.bmm(block, keys)  # [H_kv, G*rows, columns]
        if skips:
            cols = columns if columns is not None else torch.arange(reach, device=q.device)
            block_seen = Visibility(begin_on_device[start:stop], end_on_device[start:stop], prefix)
            hidden = ~block_seen.mask(cols, q.device)  # [rows, columns]
            logits.view(num_kv_heads, group, rows, -1).masked_fill_(hidden, float("-inf"))
        else:
            seen_all = int(block_end.min()) + 1  # every row of the block sees the columns before this
            if reach > seen_all:
                # [rows, strip]
                hidden = ~attention_mask(end_on_device[start:stop] - seen_all, reach - seen_all, q.device)
                logits.view(num_kv_heads, group, rows, reach)[..., seen_all:].masked_fill_(
                    hidden, float("-inf")
                )
        probs = logits.softmax(dim=-1)
        target[:, :, start:stop] = torch.bmm(probs, values).view(num_kv_heads, group, rows, head_dim)
        start = stop
    return out.permute(1, 0, 2)


def _block_breaks(begin: torch.Tensor, prefix: int) -> list[int]:
    """Rows where a block must end: a block never mixes segment-local rows with rows that
    see everything (the query), since it would compute all L columns for every row, and
    never spans two segments of local rows, since it would compute the columns of every
    segment in between, all of them masked."""
    local = begin > prefix
    changes = (local[1:] != local[:-1]) | (local[1:] & (begin[1:] != begin[:-1]))
    return (torch.nonzero(changes).flatten() + 1).tolist() + [begin.numel()]


def block_stop(start: int, limit: int, ends: list[int], skipped: int, cells: int, min_rows: int) -> int:
    """The end of the block of attention rows from `start`: as many rows, up to `limit`,
    as keep rows x reached columns within `cells` (at least `min_rows` rows). A block
    reaches the columns up to its last row's end (ends never decrease along the rows),
    less the `skipped` columns between the prefix and a local segment, so the cost grows
    with the block and bisection finds its largest size. A block sized by its first row
    alone would let short early rows run on to the end of the video: a [rows, L] block."""

    def cost(stop: int) -> int:
        return (stop - start) * (ends[stop - 1] + 1 - skipped)

    if cost(limit) <= cells:
        return limit
    fits, too_big = min(start + min_rows, limit), limit
    if cost(fits) > cells:
        return fits
    while too_big - fits > 1:
        middle = (fits + too_big) // 2
        fits, too_big = (middle, too_big) if cost(middle) <= cells else (fits, middle)
    return fits
