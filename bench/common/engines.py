"""In-process engines for the benches, from the project's one recipe
(sharp_plugin.recipe), and what the benches read out of them: per-request reports, the
processor's time, and each worker stage's time and peak memory."""

from __future__ import annotations

import gc
import os
import time
import uuid
from pathlib import Path
from typing import Any

from sharp_plugin import recipe

# A bench engine: bf16, eager (CUDA graphs are the server's matter, and CPU has none),
# seeded.
BENCH_DEFAULTS = {"dtype": "bfloat16", "enforce_eager": True, "seed": 0}


def configure_environment() -> None:
    """vLLM on CPU: a small KV cache and loopback for its internal queues. The stage
    probes below are functions sent to the workers through collective_rpc, which vLLM
    allows only with insecure serialization (bench processes only; never the server)."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
    os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")


def bench_llm(model: str | Path, *, sharp: bool = True, **engine_args: Any):
    """`vllm.LLM` for `model`, ours (`sharp`) or stock, from the recipe."""
    configure_environment()
    return recipe.build_llm(str(model), sharp=sharp, **{**BENCH_DEFAULTS, **engine_args})


def evs_llm(model: str | Path, retention: float, **engine_args: Any):
    """Stock vLLM with its EVS at `retention` (an engine-wide rate: one engine per rate)."""
    return bench_llm(model, sharp=False, video_pruning_rate=round(1.0 - retention, 6), **engine_args)


def shutdown(llm) -> None:
    llm.llm_engine.engine_core.shutdown()
    del llm
    gc.collect()


def frames_input(frames, fps: float):
    """Decoded frames # [T, H, W, 3] uint8 as vLLM's video input (frames, metadata), as
    the server hands its decoded videos over: every frame sampled, at `fps`."""
    from server.media.video import DecodedVideo, VideoInfo

    count, height, width = frames.shape[:3]
    info = VideoInfo(num_frames=count, fps=fps, width=width, height=height)
    return DecodedVideo(frames, list(range(count)), info).vllm_input()


def tag(request: dict[str, Any], sharp: dict[str, Any] | None) -> str | None:
    """Put `sharp` settings on an engine request, with a new report id (returned)."""
    if sharp is None:
        return None
    report_id = uuid.uuid4().hex
    request["mm_processor_kwargs"] = {"sharp": {**sharp, "report_id": report_id}}
    return report_id


def video_reports(llm, report_ids: list[str | None]) -> list[list]:
    """Each request's VideoReports (an empty list for an untagged one), joined as the
    server joins them, with one collective_rpc for all of them."""
    from sharp_plugin.vllm.reports import FRONTEND_RECORDS, join_report, merge_replies

    records = [FRONTEND_RECORDS.pop(rid) or [] if rid else [] for rid in report_ids]
    hashes = [item["mm_hash"] for record in records for item in record]
    worker = merge_replies(llm.collective_rpc("sharp_reports", args=(hashes,))) if hashes else {}
    return [join_report(record, worker) for record in records]


class ProcessorProbe:
    """Wall time of the multimodal processor (the frontend, this process), and the bytes
    it hands over to the engine."""

    def __init__(self):
        from vllm.multimodal.processing import BaseMultiModalProcessor

        from sharp_plugin.vllm.bounded_store import nested_tensor_bytes

        self.ms, self.handed_over = 0.0, 0
        original = BaseMultiModalProcessor.apply
        probe = self

        def apply(self, *args, **kwargs):
            started = time.perf_counter()
            result = original(self, *args, **kwargs)
            probe.ms += (time.perf_counter() - started) * 1e3
            probe.handed_over += nested_tensor_bytes(dict(result["mm_kwargs"]))
            return result

        BaseMultiModalProcessor.apply = apply

    def pop(self) -> tuple[float, int]:
        out = (self.ms, self.handed_over)
        self.ms, self.handed_over = 0.0, 0
        return out


def install_stage_probes(worker) -> None:
    """In the worker: wrap the vision tower, and (ours) the selection and the black
    prior, each call recording (stage, ms, peak extra MiB). Sent through collective_rpc:
    it imports inside, in the worker."""
    import time as _time

    import torch

    from bench.common.memory import release_free_memory, reset_peak_rss, rss_kib

    model = worker.model_runner.model
    model._bench_stages = []
    cuda = torch.cuda.is_available()

    def probed(stage, function):
        def wrapper(*args, **kwargs):
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
            else:
                release_free_memory()
                reset_peak_rss()
                before = rss_kib("VmRSS") << 10
            started = _time.perf_counter()
            result = function(*args, **kwargs)
            if cuda:
                torch.cuda.synchronize()
            elapsed_ms = (_time.perf_counter() - started) * 1e3
            peak = torch.cuda.max_memory_allocated() if cuda else rss_kib("VmHWM") << 10
            model._bench_stages.append((stage, elapsed_ms, (peak - before) / 2**20))
            return result

        return wrapper

    model._process_video_input = probed("tower", model._process_video_input)
    if hasattr(model, "sharp_selector"):
        model.sharp_selector.run_selection = probed("selection", model.sharp_selector.run_selection)
        model.sharp_prior.scores = probed("prior", model.sharp_prior.scores)


def pop_stages(worker) -> list[tuple[str, float, float]]:
    """In the worker: the stages recorded since the last call."""
    model = worker.model_runner.model
    stages, model._bench_stages = model._bench_stages, []
    return stages


def stage_totals(stages: list[tuple[str, float, float]]) -> dict[str, dict[str, float]]:
    """Per stage: summed ms and the largest peak extra MiB."""
    totals: dict[str, dict[str, float]] = {}
    for stage, ms, mib in stages:
        entry = totals.setdefault(stage, {"ms": 0.0, "peak_mib": 0.0})
        entry["ms"] += ms
        entry["peak_mib"] = max(entry["peak_mib"], mib)
    return totals
