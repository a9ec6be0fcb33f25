"""M-RoPE positions of kept tokens, carried through vLLM's multimodal-pruning plumbing.

vLLM's runner (with pruning enabled) expects each item embedding to carry its positions
in extra trailing channels, which `recompute_mrope_positions` strips and writes into the
prompt's position table. Stock EVS appends 4 channels [t, h, w, W] in the model dtype;
that has three faults we fix here (measured in docs/vllm-plumbing.md, section E):

- bf16 holds integers exactly only up to 256, so t = 257 became 256. We split every
  value into a base-256 (hi, lo) pair: 8 channels, exact up to 65535 in bf16.
- The text after the video must continue at max(t, h, w) + 1 like stock Qwen2.5-VL
  (HF FastV keeps unpruned positions, so does ShaRP), not at W like EVS.
- The temporal index uses the float seconds-per-grid, as stock positions do, not a
  truncated integer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

NUM_CHANNELS = 8
_BASE = 256


def grid_positions(t: int, h: int, w: int, t_scale: float) -> np.ndarray:
    """Stock M-RoPE (t, h, w) of a merged t x h x w grid, from 0. # [3, N] int64

    t_scale = seconds_per_grid * tokens_per_second (1.0 for images); the temporal
    index is truncated after scaling, exactly as stock Qwen2.5-VL does.
    """
    grid = np.indices((t, h, w))
    if t_scale != 1.0:
        grid[0] = (grid[0] * t_scale).astype(np.int64)
    return grid.reshape(3, -1)


def media_positions(grid_thw: Sequence[int], spatial_merge_size: int, t_scale: float) -> torch.Tensor:
    """grid_positions of an unmerged (t, h, w) grid, one row per token. # [N, 3] long"""
    t, h, w = (int(v) for v in grid_thw)
    merged = grid_positions(t, h // spatial_merge_size, w // spatial_merge_size, t_scale)
    return torch.from_numpy(merged.T.copy())


def next_text_offset(item_positions: torch.Tensor) -> int:
    """Where the text after an item starts, relative to the item's first position: its
    whole grid's max + 1, whichever tokens are kept. item_positions # [N, 3]"""
    return int(item_positions.max()) + 1 if item_positions.numel() else 0


def with_position_channels(
    kept_rows: torch.Tensor, item_positions: torch.Tensor, kept: torch.Tensor
) -> torch.Tensor:
    """Rows already gathered (`kept_rows` # [k, D], the item's rows `kept` # [k]
    ascending), with their original positions appended. # [k, D + 8]. The offset for the
    following text is computed on the whole item, so it does not depend on which tokens
    survived."""
    kept_positions = item_positions[kept]  # [k, 3]
    next_text = next_text_offset(item_positions)
    values = torch.cat(
        [kept_positions, torch.full((kept.numel(), 1), next_text, dtype=torch.long)], dim=1
    )  # [k, 4]
    hi, lo = values // _BASE, values % _BASE
    channels = torch.stack([hi, lo], dim=2).reshape(kept.numel(), NUM_CHANNELS)
    return torch.cat([kept_rows, channels.to(device=kept_rows.device, dtype=kept_rows.dtype)], 1)


def decode(with_channels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split into (embeddings # [k, D], positions # [4, k] long: t, h, w, next-text offset)."""
    channels = with_channels[:, -NUM_CHANNELS:].round().long().view(-1, 4, 2)
    values = channels[:, :, 0] * _BASE + channels[:, :, 1]  # [k, 4]
    return with_channels[:, :-NUM_CHANNELS], values.T.contiguous()


def prompt_positions_with_pruned_media(
    num_tokens: int, media: Iterable[tuple[int, int, np.ndarray]]
) -> tuple[torch.Tensor, int]:
    """Initial M-RoPE table for a prompt whose media placeholders may be shorter than
    their grids. # [3, L] long, and the decode delta.

    `media` yields (offset, placeholder_length, grid_positions [3, N]) sorted by offset.
    Stock code advances by the full grid per item, so after a pruned first video the
    next text length goes negative and crashes. Here the placeholder rows get the first
    grid positions (the runner overwrites them with the kept ones) and the text after an
    item continues at the grid's max + 1, as in stock.
    """
    parts: list[np.ndarray] = []
    start, next_position = 0, 0
    for offset, length, grid in media:
        text_len = offset - start
        parts.append(np.broadcast_to(np.arange(text_len), (3, text_len)) + next_position)
        shifted = grid + next_position + text_len
        parts.append(shifted[:, :length])
        next_position = int(shifted.max()) + 1
        start = offset + length
    if start < num_tokens:
        text_len = num_tokens - start
        parts.append(np.broadcast_to(np.arange(text_len), (3, text_len)) + next_position)
    table = np.concatenate(parts, axis=1).reshape(3, -1)
    return torch.from_numpy(table.copy()), int(table.max()) + 1 - num_tokens


def place_kept_positions(
    input_ids: Sequence[int] | torch.Tensor,  # [L]: the whole prompt
    item_positions: Sequence[torch.Tensor],  # per media item of this chunk: [4, k_i] (decode)
    mrope_positions: torch.Tensor,  # [3, L] long: the prompt's table
    num_computed_tokens: int,
    media_token_ids: Sequence[int],
) -> tuple[torch.Tensor, int]:
    """Write the kept tokens' positions into their placeholder rows for one prefill
    chunk. # ([3, L] long, decode delta)

    This replaces vLLM's `evs.recompute_mrope_positions`, which finds "the current item"
    from vision-start tokens and crashes (IndexError) when a chunk starts right after a
    vision-start token, as the scheduler does when it cuts a chunk before a video it has
    no encoder budget for; with text between two videos it would also place the second
    video's tokens after the first. Here the item is found from the placeholder runs
    themselves: the i-th item of the chunk fills the i-th run that has rows at or after
    `num_computed_tokens` (vLLM passes the chunk's items in order; the first one may
    have started in an earlier chunk). Text needs no rewriting: the initial table
    (prompt_positions_with_pruned_media) already continues after each item at its whole
    grid's max + 1, whichever tokens are kept.

    vLLM calls this for every running request at every step, decode steps included, so
    the prompt becomes a tensor only when this chunk has media to place.
    """
    positions = mrope_positions.clone()
    if len(item_positions):
        ids = torch.as_tensor(input_ids, dtype=torch.long, device=positions.device)
        media = torch.isin(ids, torch.tensor(list(media_token_ids), device=ids.device))
        flags = media.to(torch.int8)
        edges = torch.diff(flags, prepend=flags.new_zeros(1), append=flags.new_zeros(1))
        starts = (edges == 1).nonzero().flatten().tolist()
        ends = (edges == -1).nonzero().flatten().tolist()  # exclusive
        runs = [(s, e) for s, e in zip(starts, ends, strict=True) if e > num_computed_tokens]
        if len(runs) < len(item_positions):
            raise ValueError(
                f"{len(item_positions)} media items in this chunk, {len(runs)} placeholder runs left"
            )
        for index, (item, (start, end)) in enumerate(zip(item_positions, runs, strict=False)):
            first = start + (max(0, num_computed_tokens - start) if index == 0 else 0)
            last = first + item.shape[1]
            if last > end:
                raise ValueError(f"media item of {item.shape[1]} tokens overruns its placeholder run")
            base = int(positions[0, start - 1]) + 1 if start > 0 else 0  # right after vision-start
            positions[:, first:last] = item[:3].to(positions.device) + base
    return positions, int(positions.max()) + 1 - len(input_ids)
