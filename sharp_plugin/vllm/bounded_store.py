"""A thread-safe LRU mapping. Everything the plugin keeps per item (reports, prior
caches, black-frame embeddings) lives in one of these, so nothing grows without bound
in a long-running server: a store is capped by entries, by bytes, or both."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import torch

V = TypeVar("V")


class BoundedStore(Generic[V]):
    def __init__(
        self,
        max_entries: int | None = None,
        *,
        max_bytes: int | None = None,
        size_of: Callable[[V], int] | None = None,
    ):
        if max_bytes is not None and size_of is None:
            raise ValueError("a byte cap needs size_of")
        self._entries: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._max_entries, self._max_bytes, self._size_of = max_entries, max_bytes, size_of
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, key: Hashable, value: V) -> None:
        size = self._size_of(value) if self._size_of else 0
        if self._max_bytes is not None and size > self._max_bytes:
            return  # larger than the whole cache: not worth evicting everything for
        with self._lock:
            if key in self._entries:
                self._bytes -= self._entries.pop(key)[1]
            self._entries[key] = (value, size)
            self._bytes += size
            while (self._max_entries is not None and len(self._entries) > self._max_entries) or (
                self._max_bytes is not None and self._bytes > self._max_bytes
            ):
                self._bytes -= self._entries.popitem(last=False)[1][1]

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def pop(self, key: Hashable) -> V | None:
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is None:
                return None
            self._bytes -= entry[1]
            return entry[0]

    def __len__(self) -> int:
        return len(self._entries)


def nested_tensor_bytes(value) -> int:
    """Bytes of every tensor in a (nested) value: a cached tensor, a family's video input,
    or a processor's output (whose field elements hold their tensor in `.data`)."""
    if isinstance(value, torch.Tensor):
        return value.nbytes
    if isinstance(value, dict):
        return sum(nested_tensor_bytes(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(nested_tensor_bytes(v) for v in value)
    return nested_tensor_bytes(value.data) if hasattr(value, "data") else 0
