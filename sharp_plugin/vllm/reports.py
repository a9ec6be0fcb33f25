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

from typing import Any

from .bounded_store import BoundedStore

_MAX_ENTRIES = 8192


# Frontend: report_id -> [{"mm_hash", "settings"}] per video of that request.
FRONTEND_RECORDS: BoundedStore[list[dict[str, Any]]] = BoundedStore(_MAX_ENTRIES)

# Worker: mm_hash -> the decision for that item (see SharpModelMixin._select_video).
WORKER_REPORTS: BoundedStore[dict[str, Any]] = BoundedStore(_MAX_ENTRIES)


def merge_replies(replies: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """One report per mm_hash from the replies of every worker. Tensor-parallel ranks
    report the same decision; under data parallelism only the engine that ran the item
    has it, so no single reply can be trusted to hold them all."""
    merged: dict[str, dict[str, Any]] = {}
    for reply in replies:
        for mm_hash, report in (reply or {}).items():
            merged.setdefault(mm_hash, report)
    return merged


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
                "token_grid": decision.get("token_grid"),
                "selection_id": decision.get("selection_id"),
                "fallback": decision.get("fallback"),
                "prior": decision.get("prior"),
                "vision_cached": decision.get("vision_cached"),
                "context_missing": decision.get("context_missing"),
                "scored_with": decision.get("scored_with"),
            }
        )
    return joined
