"""Per-request compression reports, across vLLM's process boundary.

The decision is split between two processes:
- the frontend (API server / `LLM` / in-process AsyncLLM) runs the processor and knows,
  per request, which videos it sent (their mm_hash) with which settings;
- the worker runs `embed_multimodal` and knows N, k, the kept indices and the scoring
  time. It keeps them in a bounded store keyed by mm_hash.

The join goes through vLLM's `collective_rpc` and a worker extension:
    engine args: worker_extension_cls="sharp_plugin.vllm.reports.SharpWorkerExtension"
    offline:     llm.collective_rpc("sharp_reports", args=(hashes,))
    AsyncLLM:    await engine.collective_rpc("sharp_reports", args=(hashes,))
A request tags itself with `sharp.report_id` (kept out of every cache key); its
frontend record maps that id to its hashes. An encoder-cache hit runs no selection, so
the worker answers with the report it stored when the item was first embedded.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Generic, TypeVar

V = TypeVar("V")

_MAX_ENTRIES = 8192


class BoundedStore(Generic[V]):
    """Thread-safe LRU mapping: reports must never grow without bound in a server."""

    def __init__(self, max_entries: int = _MAX_ENTRIES):
        self._entries: OrderedDict[str, V] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def put(self, key: str, value: V) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def get(self, key: str) -> V | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def pop(self, key: str) -> V | None:
        with self._lock:
            return self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


# Frontend: report_id -> [{"mm_hash", "settings"}] per video of that request.
FRONTEND_RECORDS: BoundedStore[list[dict[str, Any]]] = BoundedStore()

# Worker: mm_hash -> the decision for that item (see SharpModelMixin._select_video).
WORKER_REPORTS: BoundedStore[dict[str, Any]] = BoundedStore()


class SharpWorkerExtension:
    """Mixed into vLLM's worker class via `worker_extension_cls`."""

    def sharp_reports(self, mm_hashes: list[str]) -> dict[str, dict[str, Any]]:
        found = {h: WORKER_REPORTS.get(h) for h in mm_hashes}
        return {h: r for h, r in found.items() if r is not None}


def join_report(
    record: list[dict[str, Any]], worker_reports: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """One entry per video of the request: the frontend's settings plus the worker's
    decision (None fields if the worker evicted it)."""
    joined = []
    for item in record:
        decision = worker_reports.get(item["mm_hash"], {})
        settings = item["settings"]
        joined.append(
            {
                "mm_hash": item["mm_hash"],
                "method": settings["method"],
                "retention": settings["retention"],
                "prune_layer": item["prune_layer"],  # None when no scoring pass ran
                "video_tokens": decision.get("num_tokens"),
                "video_tokens_kept": decision.get("num_kept"),
                "scoring_ms": decision.get("scoring_ms"),
                "kept_indices": decision.get("kept_indices"),
                "grid_thw": decision.get("grid_thw"),
                "selection_number": decision.get("selection_number"),
            }
        )
    return joined
