"""Tokens before/after and the scoring pass's cost against an unpruned request, side by
side in one engine run (tiny model, CPU).

Usage: python bench/scoring_overhead.py [--videos 12] [--layers 4] [--out bench/results/scoring_overhead.json]

Each method runs over the same distinct videos (so no cache hides work), one request at
a time, max_tokens=1 so the request is prefill. "request ms" is the wall time of the
whole request (processor + vision tower + scoring + LM prefill + 1 token);
"scoring ms" is the worker's own timer around the selection. The tiny model's LM is
small next to its vision tower and the processor, so these ratios say little about a
7B model (see docs/method.md, cost model): they show the plumbing's overhead here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")

REPO = Path(__file__).resolve().parents[1]
METHODS = {
    "none": {"method": "none"},
    "uniform r=0.25": {"method": "uniform", "retention": 0.25},
    "fastv r=0.25": {"method": "fastv", "retention": 0.25},
    "sharp r=0.25 (mean prior)": {"method": "sharp", "retention": 0.25, "debias": "mean"},
    "sharp r=0.25 (black prior)": {"method": "sharp", "retention": 0.25, "debias": "black"},
}


def video(seed: int, frames: int = 16, size: int = 224, fps: float = 4.0):
    rng = np.random.RandomState(seed)
    pixels = (rng.rand(frames, size, size, 3) * 255).astype(np.uint8)
    meta = {
        "total_num_frames": frames, "fps": fps, "duration": frames / fps, "video_backend": "opencv",
        "frames_indices": list(range(frames)), "do_sample_frames": False,
    }  # fmt: skip
    return pixels, meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "scoring_overhead.json"))
    args = parser.parse_args()

    from vllm import LLM, SamplingParams

    from sharp_plugin import WORKER_EXTENSION
    from sharp_plugin.vllm.reports import FRONTEND_RECORDS, join_report

    model_dir = REPO / "runs" / "models" / f"tiny-qwen25vl-{args.layers}l"
    if not (model_dir / "config.json").exists():
        builder = [sys.executable, str(REPO / "scripts/build_tiny_model.py"), str(model_dir)]
        subprocess.run([*builder, "--layers", str(args.layers)], check=True)
    llm = LLM(
        model=str(model_dir), dtype="bfloat16", max_model_len=4096, enforce_eager=True,
        limit_mm_per_prompt={"video": 1}, worker_extension_cls=WORKER_EXTENSION, seed=0,
        hf_overrides={"architectures": ["SharpQwen2_5_VLForConditionalGeneration"]},
    )  # fmt: skip
    prompt = (
        "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>What colour is the circle?"
        "<|im_end|>\n<|im_start|>assistant\n"
    )
    params = SamplingParams(max_tokens=1, temperature=0.0)
    # Warm up every code path once (first-call allocations, the black prior's ViT run).
    for settings in METHODS.values():
        llm.generate({"prompt": prompt, "multi_modal_data": {"video": video(10_000)},
                      "mm_processor_kwargs": {"sharp": settings}}, params, use_tqdm=False)  # fmt: skip

    rows = []
    for name, settings in METHODS.items():
        request_ms, scoring_ms, prompt_tokens, kept = [], [], [], []
        for i in range(args.videos):
            report_id = uuid.uuid4().hex
            request = {
                "prompt": prompt,
                "multi_modal_data": {"video": video(i)},
                "mm_processor_kwargs": {"sharp": {**settings, "report_id": report_id}},
            }
            started = time.perf_counter()
            (output,) = llm.generate(request, params, use_tqdm=False)
            request_ms.append((time.perf_counter() - started) * 1e3)
            record = FRONTEND_RECORDS.get(report_id)
            worker = llm.collective_rpc("sharp_reports", args=([r["mm_hash"] for r in record],))[0]
            (entry,) = join_report(record, worker)
            scoring_ms.append(entry["scoring_ms"])
            prompt_tokens.append(len(output.prompt_token_ids))
            kept.append(entry["video_tokens_kept"])
        rows.append(
            {
                "method": name,
                "video_tokens": entry["video_tokens"],
                "video_tokens_kept": kept[0],
                "prompt_tokens": prompt_tokens[0],
                "request_ms_median": statistics.median(request_ms),
                "scoring_ms_median": statistics.median(scoring_ms),
                "request_ms": request_ms,
                "scoring_ms": scoring_ms,
            }
        )
    unpruned = rows[0]["request_ms_median"]
    for row in rows:
        row["scoring_share_of_unpruned_request"] = row["scoring_ms_median"] / unpruned
        row["request_ratio_to_unpruned"] = row["request_ms_median"] / unpruned

    columns = ("tokens", "prompt", "request ms", "scoring ms", "scoring/unpruned", "request/unpruned")
    widths = (11, 6, 10, 10, 16, 16)
    print(f"{'method':28} " + " ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True)))
    for r in rows:
        print(
            f"{r['method']:28} {r['video_tokens']:>5}->{r['video_tokens_kept']:<5} {r['prompt_tokens']:>6} "
            f"{r['request_ms_median']:>10.1f} {r['scoring_ms_median']:>10.1f} "
            f"{r['scoring_share_of_unpruned_request']:>16.1%} {r['request_ratio_to_unpruned']:>16.2f}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"layers": args.layers, "videos": args.videos, "grid": [8, 16, 16], "dtype": "bfloat16"}
    out.write_text(json.dumps({"config": meta, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
