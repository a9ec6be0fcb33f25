"""Turning a budget into kept indices. Every function returns indices in ascending
(original) order, so the kept tokens keep their order in the prompt."""

from __future__ import annotations

import torch


def uniform_indices(num_tokens: int, k: int) -> torch.Tensor:
    """k evenly spaced tokens, each the centre of its 1/k slice. # [k] long

    Integer arithmetic: floor((2i + 1) * N / 2k) is strictly increasing for k <= N.
    """
    i = torch.arange(k)
    return ((2 * i + 1) * num_tokens) // (2 * k)


def random_indices(num_tokens: int, k: int, seed: int) -> torch.Tensor:
    """k tokens drawn without replacement from a generator seeded per request. # [k] long"""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(num_tokens, generator=generator)[:k].sort().values


def in_original_order(indices: torch.Tensor) -> torch.Tensor:
    return indices.sort().values


def oracle_indices(num_tokens: int, k: int, priority: tuple[int, ...]) -> torch.Tensor:
    """The first k of `priority`, then the rest of the budget uniformly over the other
    tokens. # [k] long, ascending

    Vectorised (O(N)): the request controls both N and the list, so no Python loop
    may scale with their product.
    """
    first = torch.tensor(list(dict.fromkeys(priority))[:k], dtype=torch.long)
    is_first = torch.zeros(num_tokens, dtype=torch.bool)
    is_first[first] = True
    others = torch.nonzero(~is_first).flatten()  # ascending
    fill = others[uniform_indices(others.numel(), k - first.numel())] if k > first.numel() else others[:0]
    return torch.cat([first, fill]).sort().values
