"""Per-request compression reports, across vLLM's process boundary.

The decision is split between two processes:
- the frontend (API server / `LLM` / in-process AsyncLLM) runs the processor and knows,
  per request, which videos it sent (their mm_hash) with which settings;
- the worker runs `embed_multimodal` and writes each video's `VideoReport` into a
  bounded store keyed by mm_hash.

The join goes through vLLM's `collective_rpc` and a worker extension:
    engine args: worker_extension_cls (sharp_plugin.recipe sets it)
    offline:     llm.collective_rpc("sharp_reports", args=(hashes,))
    AsyncLLM:    await engine.collective_rpc("sharp_reports", args=(hashes,))
A request tags itself with `sharp.report_id` (kept out of every cache key); its
frontend record maps that id to its hashes. An encoder-cache hit runs no selection, so
the worker answers with the report it stored when the item was first embedded.
"""

from __future__ import annotations

from typing import Any

from sharp_plugin.report import VideoReport

from .bounded_store import BoundedStore

_MAX_ENTRIES = 8192


# Frontend: report_id -> per video of that request, its mm_hash and the settings'
# fields of its report (what the report says when the worker no longer holds it).
FRONTEND_RECORDS: BoundedStore[list[dict[str, Any]]] = BoundedStore(_MAX_ENTRIES)

# Worker: mm_hash -> that item's VideoReport, dumped (what collective_rpc carries).
WORKER_REPORTS: BoundedStore[dict[str, Any]] = BoundedStore(_MAX_ENTRIES)


def frontend_record(mm_hash: str, settings) -> dict[str, Any]:
    """One video's frontend record, from its (validated) SharpSettings. `auto` leaves the
    retention to the worker's report (it is chosen per video)."""
    record = {
        "mm_hash": mm_hash,
        "method": settings.method,
        "prune_layer": settings.prune_layer if settings.needs_scoring_pass else None,
    }
    if settings.retention != "auto":
        record["retention"] = settings.retention
    return record


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


def join_report(record: list[dict[str, Any]], worker_reports: dict[str, dict[str, Any]]) -> list[VideoReport]:
    """One report per video of the request: the worker's, with the request's own
    settings (items that prune nothing share one cache entry, and so one worker report,
    whatever their request said), or the settings alone where the worker evicted it."""
    joined = []
    for item in record:
        settings = {k: v for k, v in item.items() if k != "mm_hash"}
        report = {"retention": None, **worker_reports.get(item["mm_hash"], {}), **settings}
        joined.append(VideoReport.model_validate(report))
    return joined
