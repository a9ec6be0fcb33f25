"""lmms-eval, unchanged, against sharp-serve, side by side with bench/quality.py.

    python -m bench.lmms_eval_parity                 # 1000 held-out clips (~25 min)
    python -m bench.lmms_eval_parity --small         # 20 clips

The proxy video-QA clips become a local lmms-eval task (bench/lmms_eval_task/: the clips
as lossless mp4 files and a jsonl on disk, no hub). lmms-eval 0.7.3's own `openai` chat
model with `pass_video_url=True` sends each clip to our server as a `file://` video_url
with `media_io_kwargs.video.num_frames`, and picks the pruning with the model name alone
(`sharp-proxy-qwen25vl:<preset>`). bench/quality.py's in-process pass scores the same
clips with the same presets. The two accuracies must agree within one standard error.

lmms-eval lives in its own venv (scripts/install_lmms_eval.sh, default .venv-lmms): it
pins torch and transformers releases newer than vLLM 0.32's, and it only talks HTTP to
the server. Writes JSON and a markdown table to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench.common.engines import configure_environment, shutdown
from bench.common.results import REPO, add_output_arguments, output_dir, write_report
from bench.common.servers import ServerProcess, free_port, ours_command
from bench.quality import make_engine, run_pass
from proxy_videoqa.clips import Clip
from proxy_videoqa.geometry import FPS, NUM_FRAMES
from proxy_videoqa.held_out import held_out_clips
from server.presets import load_presets

ROOT = REPO
SOURCES = ["server", "sharp_plugin", "models/sharp-proxy-qwen25vl", "bench/lmms_eval_parity.py"]

TASK_TEMPLATE = ROOT / "bench" / "lmms_eval_task"
TASK = "sharp_proxy_videoqa"
SERVED = "sharp-proxy-qwen25vl"  # configs/default.yaml's served_model_name
# `none` and two ShaRP presets; uniform-r10 checks the agreement where accuracy is low.
PRESET_NAMES = ["none", "sharp", "sharp-r10", "uniform-r10"]
PRESETS = load_presets(ROOT / "configs" / "pruning-presets.yaml")
DEFAULT_LMMS_EVAL = ROOT / ".venv-lmms" / "bin" / "lmms-eval"


def write_lossless_mp4(path: Path, frames: np.ndarray, fps: float) -> None:
    """H.264 at crf 0 in 4:4:4: the decoded pixels are the clip's (up to YUV rounding),
    so the server sees what quality.py feeds the engine directly."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=int(fps), options={"crf": "0"})
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv444p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def build_task(clips: list[Clip], directory: Path) -> Path:
    """The task directory: the template's YAML and hooks, the clips and their jsonl."""
    shutil.rmtree(directory, ignore_errors=True)
    (directory / "videos").mkdir(parents=True)
    shutil.copy(TASK_TEMPLATE / "utils.py", directory / "utils.py")
    # data_files made absolute, so that lmms-eval finds the clips from any directory.
    config = (TASK_TEMPLATE / f"{TASK}.yaml").read_text()
    relative = f"test: {TASK}.jsonl"
    assert relative in config, "the template's data_files line changed"
    (directory / f"{TASK}.yaml").write_text(config.replace(relative, f"test: {directory / TASK}.jsonl"))
    with (directory / f"{TASK}.jsonl").open("w") as docs:
        for index, clip in enumerate(clips):
            video = directory / "videos" / f"{index:04d}-{clip.task}-{clip.split}.mp4"
            write_lossless_mp4(video, clip.frames, FPS)
            doc = {"index": index, "video": str(video), "question": clip.question, "answer": clip.answer}
            docs.write(json.dumps({**doc, "task": clip.task, "split": clip.split, "seed": clip.seed}) + "\n")
    return directory


def run_lmms_eval(lmms_eval: Path, task_dir: Path, base_url: str, model: str, out: Path, concurrency: int):
    """lmms-eval's own CLI, unchanged; returns (correct per document, its own accuracy, mean
    prompt tokens, seconds)."""
    model_args = ",".join(
        [
            f"base_url={base_url}",
            f"model={model}",
            "pass_video_url=True",
            f"max_frames_num={NUM_FRAMES}",
            f"num_concurrent={concurrency}",
            "timeout=300",
        ]
    )
    command = [
        str(lmms_eval), "--model", "openai", "--model_args", model_args, "--tasks", TASK,
        "--include_path", str(task_dir), "--output_path", str(out), "--log_samples", "--batch_size", "1",
    ]  # fmt: skip
    env = {**os.environ, "OPENAI_API_KEY": "unused", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    started = time.perf_counter()
    with (out.parent / f"{out.name}.log").open("w") as log:
        subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    seconds = time.perf_counter() - started
    # lmms-eval logs a failed run and still exits 0: no files means it failed.
    samples, results = sorted(out.rglob(f"*samples_{TASK}.jsonl")), sorted(out.rglob("*_results.json"))
    if not samples or not results:
        raise RuntimeError(f"lmms-eval wrote no results under {out}: see {out.parent / out.name}.log")
    correct, prompt_tokens = {}, []
    for line in samples[-1].read_text().splitlines():
        record = json.loads(line)  # doc_id: the document's row in the jsonl
        correct[record["doc_id"]] = bool(record["exact_match"])
        # The server's usage, as lmms-eval logged it: the pruned prompt's length.
        prompt_tokens.append(record["token_counts"][0]["input_tokens"])
    own = json.loads(results[-1].read_text())["results"][TASK]
    return correct, own["exact_match,none"], float(np.mean(prompt_tokens)), seconds


def accuracy(correct: list[bool]) -> tuple[float, float]:
    """(accuracy, one standard error)."""
    p = float(np.mean(correct))
    return p, float(np.sqrt(p * (1 - p) / len(correct)))


def compare(clips: list[Clip], ours: dict[int, bool], reference: list[bool]) -> dict:
    keys = ["all", *sorted({c.task for c in clips})]
    rows = {}
    for key in keys:
        indices = [i for i, c in enumerate(clips) if key in ("all", c.task)]
        a, se_a = accuracy([ours[i] for i in indices])
        b, se_b = accuracy([reference[i] for i in indices])
        standard_error = max(se_a, se_b)
        rows[key] = {
            "n": len(indices),
            "lmms_eval": round(a, 4),
            "quality_py": round(b, 4),
            "standard_error": round(standard_error, 4),
            "difference": round(a - b, 4),
            "within_one_se": abs(a - b) <= standard_error + 1e-12,
            "same_verdict": round(float(np.mean([ours[i] == reference[i] for i in indices])), 4),
        }
    return rows


def markdown(report: dict) -> str:
    lines = [
        "# lmms-eval against sharp-serve, beside bench/quality.py",
        "",
        f"{report['clips']} held-out proxy clips, lmms-eval {report['lmms_eval_version']} `openai` model "
        "with `pass_video_url=True` against `sharp-serve --config configs/default.yaml`, choosing the "
        "pruning by model name; bench/quality.py's in-process pass on the same clips and presets. "
        "Standard error: the larger of the two.",
        "",
        "| model name | n | lmms-eval | quality.py | difference | one SE | within 1 SE | same result |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for preset, row in report["results"].items():
        cell = row["all"]
        lines.append(
            f"| `{SERVED}:{preset}` | {cell['n']} | {cell['lmms_eval']:.3f} | {cell['quality_py']:.3f} | "
            f"{cell['difference']:+.3f} | {cell['standard_error']:.3f} | "
            f"{'yes' if cell['within_one_se'] else 'NO'} | {100 * cell['same_verdict']:.1f}% |"
        )
    lines += ["", "Per task (lmms-eval / quality.py):", ""]
    for preset, row in report["results"].items():
        parts = [f"{k} {v['lmms_eval']:.3f} / {v['quality_py']:.3f}" for k, v in row.items() if k != "all"]
        lines.append(f"- `{preset}`: " + "; ".join(parts))
    lines += ["", f"Command: `{report['provenance']['command']}`", ""]
    return "\n".join(lines)


def lmms_eval_version(lmms_eval: Path) -> str:
    python = lmms_eval.parent / "python"
    script = "import importlib.metadata as m; print(m.version('lmms-eval'))"
    return subprocess.run(
        [str(python), "-c", script], capture_output=True, text=True, check=True
    ).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lmms-eval", type=Path, default=DEFAULT_LMMS_EVAL, help="the lmms-eval CLI")
    parser.add_argument("--per-split", type=int, default=125, help="held-out clips per task and split")
    parser.add_argument("--presets", nargs="+", default=PRESET_NAMES, choices=sorted(PRESETS))
    parser.add_argument("--concurrency", type=int, default=8)
    # Under runs/media: the default config's allowed_local_root, so `make serve` reads the clips.
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "media" / "lmms_eval")
    parser.add_argument("--name", default="lmms_eval", help="output file stem")
    add_output_arguments(parser)  # --small: 20 clips (the 8 task/split cells, 2-3 each)
    parser.add_argument(
        "--base-url",
        help="a running sharp-serve with the default config (its allowed_local_root must hold --runs); "
        "default: start one",
    )
    args = parser.parse_args()
    if not args.lmms_eval.exists():
        sys.exit(f"{args.lmms_eval} not found: run scripts/install_lmms_eval.sh first")
    clips = list(held_out_clips(args.per_split))
    if args.small:
        clips = list(held_out_clips(3))[:20]
    configure_environment()
    task_dir = build_task(clips, args.runs / "task")

    # bench/quality.py's pass: the engine in-process, raw frames, the preset's settings.
    reference: dict[str, list[bool]] = {}
    bar = tqdm(total=len(clips) * len(args.presets), unit="clip", desc="quality.py")
    llm = make_engine(ROOT / "models" / SERVED, "bfloat16")
    for preset in args.presets:
        rows = run_pass(llm, clips, lambda clip, p=preset: dict(PRESETS[p]), bar)
        reference[preset] = [row["correct"] for row in rows]
    bar.close()
    shutdown(llm)

    # lmms-eval against the server the README's first command starts (or a running one).
    server, base_url = None, args.base_url
    if base_url is None:
        env = {
            "SHARP_SERVE_SECURITY__ALLOWED_LOCAL_ROOT": str(task_dir),
            "SHARP_SERVE_FILES__DIRECTORY": str(args.runs / "files"),
        }
        port = free_port()
        command = ours_command(ROOT / "configs/default.yaml", port)
        server = ServerProcess(command, port, args.runs / "server.log", env=env, name="sharp-serve").start()
        base_url = server.base_url
    results, seconds, prompt_tokens = {}, {}, {}
    try:
        for preset in args.presets:
            out = args.runs / f"out-{preset}"
            shutil.rmtree(out, ignore_errors=True)
            correct, own_accuracy, prompt_tokens[preset], seconds[preset] = run_lmms_eval(
                args.lmms_eval,
                task_dir,
                f"{base_url}/v1",
                f"{SERVED}:{preset}",
                out,
                args.concurrency,
            )
            if sorted(correct) != list(range(len(clips))):
                raise RuntimeError(f"lmms-eval scored {len(correct)} of {len(clips)} clips for {preset}")
            results[preset] = compare(clips, correct, reference[preset])
            # Its own aggregate is the mean of the per-clip results read above.
            assert abs(own_accuracy - results[preset]["all"]["lmms_eval"]) < 1e-4, own_accuracy
    finally:
        if server is not None:
            server.stop()

    report = {
        "clips": len(clips),
        "lmms_eval_version": lmms_eval_version(args.lmms_eval),
        "presets": {p: PRESETS[p] for p in args.presets},
        "results": results,
        "lmms_eval_seconds": {k: round(v, 1) for k, v in seconds.items()},
        "lmms_eval_prompt_tokens": {k: round(v, 2) for k, v in prompt_tokens.items()},
    }
    write_report(output_dir(args, "lmms_eval"), args.name, report, markdown, sources=SOURCES, indent=2)
    if not all(row["all"]["within_one_se"] for row in results.values()):
        sys.exit("lmms-eval and quality.py disagree by more than one standard error")


if __name__ == "__main__":
    main()
