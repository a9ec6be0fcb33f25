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
    tokens. # [k] long, ascending"""
    first = list(dict.fromkeys(priority))[:k]
    others = torch.tensor([i for i in range(num_tokens) if i not in set(first)], dtype=torch.long)
    fill = others[uniform_indices(len(others), k - len(first))] if k > len(first) else others[:0]
    return torch.cat([torch.tensor(first, dtype=torch.long), fill]).sort().values
