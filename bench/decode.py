"""Decode time across decoders, samplings, readers and clips, interleaved over rounds.

Each round times every arm on every clip once, in an order rotated from round to round:
- `full`: every frame at full resolution with one decord reader, the baseline. Each
  arm's ratio to it is taken within the same round, so drift between rounds cancels;
- the server's decode (server/media/video.py) of --frames frames, `uniform` and
  `keyframes`, with 1 and 2 readers, with each decoder backend (`media.decoder`): decord
  on each build (decord 0.6.0, last released in 2021, and decord2, its maintained fork,
  imported under the same name), pyav (forward decoding: seeking only past a keyframe,
  dropping unreferenced frames on the way), and torchcodec where it loads here (where it
  does not, the reason is recorded);
- vLLM's OpenCV loader as `vllm serve` runs it (full resolution, from bytes).

Decord builds share the import name `decord`, so each runs in its own worker process
with its build first on sys.path (a build other than the installed one is fetched from
the package registry with `pip install --target` under runs/bench/decoders/). Workers
stay up between jobs, so imports are outside the timings, and only one runs at a time.

A ratio is the median over rounds with a 95% bootstrap interval (bench/common/stats.py).
The targets (uniform at most 0.2 of a full decode with 1 and with 2 readers, keyframes at
most 0.09) count as met only when the interval's upper end is under them.

Usage: python -m bench.decode [--rounds 3] [--frames 32] [--clips 60s-720p 600s-1080p ...]
       [--builds installed decord==0.6.0]
Writes decode.{json,md,png}. Clips are generated (H.264 from libx264 `veryfast`, moving
content, a keyframe every 2 s) and cached under runs/bench/."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from importlib.metadata import distributions
from pathlib import Path

import av
import numpy as np

from bench.common.results import REPO, add_output_arguments, output_dir, write_report
from bench.common.stats import median_with_interval, ratio

SOURCES = ["server/media/video.py", "server/media/decoders", "bench/decode.py"]
CLIPS = ["60s-720p", "60s-1080p", "600s-720p", "600s-1080p"]
BUILDS = ["installed", "decord==0.6.0"]  # "installed": this environment's decord (decord2)
TARGETS = {("uniform", 1): 0.2, ("uniform", 2): 0.2, ("keyframes", 2): 0.09}  # of a full decode
FPS = 30


def make_clip(path: Path, seconds: int, height: int, fps: int = FPS) -> Path:
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    width = height * 16 // 9
    yy, xx = np.mgrid[:height, :width]
    base = np.repeat(((xx // 40 + yy // 40) % 2 * 60 + 40).astype(np.uint8)[:, :, None], 3, axis=2)
    partial = path.with_suffix(".partial.mp4")
    with av.open(str(partial), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "veryfast", "g": str(fps * 2)})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(seconds * fps):
            frame = np.roll(base, i * 4, axis=1)
            frame[:, :, 0] = (i * 3) % 256
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    partial.rename(path)  # a clip interrupted halfway is never taken for a whole one
    return path


def clip_path(name: str) -> Path:
    seconds, height = map(int, re.fullmatch(r"(\d+)s-(\d+)p", name).groups())
    return make_clip(REPO / "runs" / "bench" / f"clip-{seconds}s-{height}p.mp4", seconds, height)


def bench_limits(frames: int):
    """The server's media limits as the benches run them: `frames` frames, Qwen's 448^2
    frame budget, clips up to an hour."""
    from server.settings import MediaSettings

    return MediaSettings(max_frames=frames, max_frame_pixels=448 * 448, max_video_seconds=3600)


# --- the worker: one decord build, jobs on stdin, timings on stdout -------------------------


# Mean absolute difference (of 255) over a frame's thumbnail past which a decoded frame is
# another frame: two resizers differ by about 1 here, neighbouring frames by 20 or more.
WRONG_FRAME = 8.0


def thumbnails(frames: np.ndarray) -> list:
    """Each frame's quarter-scale grey thumbnail: enough to tell one frame from another."""
    return frames[:, ::4, ::4].mean(axis=3).round().astype(int).tolist()


def sequential_thumbnails(clip: Path, frames: int) -> list:
    """The truth the decoders are checked against: a plain PyAV decode of every frame up
    to the last sampled one (no seek, no skipped frame), the sampled ones converted at the
    server's size."""
    from server.media import video
    from server.media.decoders import pyav_reader

    limits = bench_limits(frames)
    info = video.probe(clip, video.get_decoder("pyav"))
    indices = video.sample_indices(info, limits, num_frames=frames)
    width, height = video.target_size(info.width, info.height, video.frame_pixels(limits, len(indices)))
    wanted, out = set(indices), {}
    with av.open(str(clip)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                rgb = frame.to_ndarray(
                    format="rgb24", width=width, height=height, interpolation=pyav_reader.RESIZE
                )
                out[index] = rgb
            if index >= indices[-1]:
                break
    return thumbnails(np.stack([out[i] for i in indices]))


def run_job(job: dict) -> int | list:
    """Do one arm's work on one clip; return the frames it produced (a check: their
    thumbnails)."""
    clip, frames = Path(job["clip"]), job["frames"]
    if job["arm"] == "thumbnails":
        from server.media import video

        decoded = video.decode(clip, bench_limits(frames), num_frames=frames, decoder=job["decoder"])
        return thumbnails(decoded.frames)
    if job["arm"] == "full":
        import decord

        reader = decord.VideoReader(str(clip), ctx=decord.cpu(0), num_threads=1)
        for _ in range(len(reader)):
            reader.next()  # decode and convert, then drop: 18,000 frames of 1080p would not fit
        return len(reader)
    if job["arm"] == "server":
        from server.media import video

        decoded = video.decode(
            clip, bench_limits(frames), num_frames=frames, sampling=job["sampling"],
            readers=job["readers"], decoder=job["decoder"],
        )  # fmt: skip
        return len(decoded.frames)
    if job["arm"] == "opencv":
        from vllm.multimodal.video import VideoBackend

        decoded, _ = VideoBackend.load_bytes(clip.read_bytes(), num_frames=frames)
        return len(decoded)
    if job["arm"] == "load":  # whether a decoder loads and decodes here at all
        from server.media import video

        return len(video.decode(clip, bench_limits(frames), num_frames=frames, decoder=job["decoder"]).frames)
    raise ValueError(job["arm"])


def worker() -> None:
    import decord
    import vllm.multimodal.video  # noqa: F401  (imports outside the timings)

    import server.media.video  # noqa: F401

    # Which distribution this `decord` came from: decord and decord2 share the module name.
    site = str(Path(decord.__file__).parents[1])
    (distribution,) = [d for d in distributions(path=[site]) if d.metadata["Name"] in ("decord", "decord2")]
    name = f"{distribution.metadata['Name']} {distribution.version}"
    print(json.dumps({"decord": name, "from": decord.__file__}), flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        try:
            started = time.perf_counter()
            produced = run_job(job)
            print(json.dumps({"seconds": time.perf_counter() - started, "frames": produced}), flush=True)
        except Exception as exc:  # reported, not fatal: e.g. a torchcodec that does not load
            print(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:500]}), flush=True)


class Worker:
    """A `python -m bench.decode --worker` child with one decord build first on its path."""

    def __init__(self, build: str):
        env = dict(os.environ)
        if build != "installed":
            site = REPO / "runs" / "bench" / "decoders" / re.sub(r"[^\w.]+", "-", build)
            if not site.exists():
                subprocess.run(
                    [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), build],
                    check=True,
                )
            env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO), env.get("PYTHONPATH", "")])
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.decode", "--worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO, env=env,
        )  # fmt: skip
        self.decord = json.loads(self.process.stdout.readline())

    def run(self, job: dict) -> dict:
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


# --- the run -----------------------------------------------------------------------------------


def decoder_label(decoder: str, build_label: str) -> str:
    """A backend with its version: decord's is its build's (decord 0.6.0 or decord2)."""
    return {"decord": build_label, "pyav": f"pyav {av.__version__}"}.get(decoder, decoder)


def arm_name(arm: dict, build_label: str) -> str:
    if arm["arm"] == "server":
        return f"{decoder_label(arm['decoder'], build_label)}, {arm['sampling']}, {arm['readers']} reader(s)"
    return {"full": "full decode (decord, 1 reader)", "opencv": "vLLM's OpenCV loader"}[arm["arm"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--clips", nargs="+", default=CLIPS, help="SECONDSs-HEIGHTp, e.g. 60s-720p")
    parser.add_argument("--builds", nargs="+", default=BUILDS, help="decord builds: installed or a pip spec")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    add_output_arguments(parser)
    args = parser.parse_args()
    if args.worker:
        return worker()
    if args.small:  # every arm and step on a tiny clip, the installed build only
        args.rounds, args.frames, args.clips, args.builds = 2, 4, ["16s-240p"], ["installed"]

    clips = {name: clip_path(name) for name in args.clips}
    workers = {build: Worker(build) for build in args.builds}
    labels = {build: w.decord["decord"] for build, w in workers.items()}
    main_worker = workers[args.builds[0]]
    # torchcodec's wheel links CUDA: measured only where it loads, the reason recorded where not.
    torchcodec = main_worker.run(
        {"arm": "load", "decoder": "torchcodec", "clip": str(next(iter(clips.values()))), "frames": 2}
    )
    decoders = [(build, "decord") for build in args.builds] + [(args.builds[0], "pyav")]
    if "error" not in torchcodec:
        decoders.append((args.builds[0], "torchcodec"))
    arms: list[tuple[str, dict]] = [(args.builds[0], {"arm": "full"})]
    for build, decoder in decoders:
        for sampling in ("uniform", "keyframes"):
            for readers in (1, 2):
                job = {"arm": "server", "decoder": decoder, "sampling": sampling, "readers": readers}
                arms.append((build, job))
    arms.append((args.builds[0], {"arm": "opencv"}))

    times: dict[str, dict[str, list[float]]] = {clip: {} for clip in clips}
    frames_check: dict[str, dict[str, dict]] = {}
    try:
        # Untimed, first: does each decoder return the frames it says it does?
        for clip, path in clips.items():
            truth = np.asarray(sequential_thumbnails(path, args.frames))
            frames_check[clip] = {}
            for build, decoder in decoders:
                job = {"arm": "thumbnails", "decoder": decoder, "clip": str(path), "frames": args.frames}
                outcome = workers[build].run(job)
                if "error" in outcome:
                    raise RuntimeError(f"{decoder} on {clip}: {outcome['error']}")
                difference = np.abs(np.asarray(outcome["frames"]) - truth).mean(axis=(1, 2))
                frames_check[clip][decoder_label(decoder, labels[build])] = {
                    "wrong": int((difference > WRONG_FRAME).sum()),
                    "of": len(difference),
                    "max_difference": round(float(difference.max()), 1),
                }
            print(f"frames checked: {clip}", file=sys.stderr, flush=True)
        for build, arm in arms:  # a warm-up, untimed: first calls, the page cache
            workers[build].run({**arm, "clip": str(clips[args.clips[0]]), "frames": args.frames})
        for round_index in range(args.rounds):
            shift = round_index % len(arms)
            for clip, path in clips.items():
                for build, arm in arms[shift:] + arms[:shift]:  # interleaved: a new order each round
                    outcome = workers[build].run({**arm, "clip": str(path), "frames": args.frames})
                    if "error" in outcome:
                        raise RuntimeError(f"{arm_name(arm, labels[build])} on {clip}: {outcome['error']}")
                    times[clip].setdefault(arm_name(arm, labels[build]), []).append(outcome["seconds"])
                print(f"round {round_index + 1}/{args.rounds}: {clip} done", file=sys.stderr, flush=True)
    finally:
        for w in workers.values():
            w.close()

    report = summarise(times, labels, args)
    report["torchcodec"] = "measured" if "error" not in torchcodec else f"not measured: {torchcodec['error']}"
    report["decoders"] = {"pyav": f"pyav {av.__version__}", **labels}
    report["frames_check"] = frames_check
    out = output_dir(args, "decode")
    write_report(out, "decode", report, markdown, plot, sources=SOURCES, indent=2)


def summarise(times: dict[str, dict[str, list[float]]], labels: dict[str, str], args) -> dict:
    full = arm_name({"arm": "full"}, "")
    clips = {}
    for clip, rows in times.items():
        clips[clip] = {
            name: {
                "seconds": median_with_interval(values),
                "of_full_decode": ratio(values, rows[full]),
                "runs_s": values,
            }
            for name, values in rows.items()
        }
    builds = list(labels.values())
    comparison = {}
    if len(builds) > 1:  # the installed build's time against each other build's, arm by arm
        ours = builds[0]
        for other in builds[1:]:
            for clip, rows in times.items():
                for name, values in rows.items():
                    if name.startswith(ours + ","):
                        twin = other + name[len(ours) :]
                        comparison.setdefault(f"{ours} / {other}", {})[f"{clip}: {name[len(ours) + 2 :]}"] = (
                            ratio(values, rows[twin])
                        )
    targets = {}
    for clip, rows in clips.items():
        for decoder in (builds[0], f"pyav {av.__version__}", "torchcodec"):
            for (sampling, readers), bound in TARGETS.items():
                name = f"{decoder}, {sampling}, {readers} reader(s)"
                if name not in rows:  # torchcodec where it does not load
                    continue
                summary = rows[name]["of_full_decode"]
                targets[f"{clip}: {name} <= {bound}"] = {
                    **summary, "target": bound, "met": summary["ci95"][1] <= bound,
                }  # fmt: skip
    return {
        "rounds": args.rounds,
        "frames": args.frames,
        "clips": {clip: {"fps": FPS, "gop_frames": 2 * FPS} for clip in times},
        "builds": labels,
        "arms": clips,
        "build_time_ratios": comparison,
        "targets": targets,
    }


def _interval(summary: dict, digits: int = 2) -> str:
    low, high = summary["ci95"]
    return f"{summary['median']:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def markdown(report: dict) -> str:
    lines = [
        f"# decode: {report['frames']} frames, {report['rounds']} interleaved rounds (median [95% interval])",
        "",
    ]
    for clip, rows in report["arms"].items():
        lines += [f"## {clip}", "", "| arm | seconds | of a full decode |", "|---|---|---|"]
        lines += [
            f"| {name} | {_interval(r['seconds'])} | {_interval(r['of_full_decode'], 3)} |"
            for name, r in rows.items()
        ]
        lines.append("")
    for pair, rows in report["build_time_ratios"].items():
        lines += [f"## time, {pair} (below 1: the first is faster)", "", "| clip: arm | ratio |", "|---|---|"]
        lines += [f"| {name} | {_interval(r, 3)} |" for name, r in rows.items()]
        lines.append("")
    lines += [
        "## targets (met only when the whole interval is under the bound)",
        "",
        "| target | of a full decode | met |",
    ]
    lines.append("|---|---|---|")
    for name, t in report["targets"].items():
        lines.append(f"| {name} | {_interval(t, 3)} | {'yes' if t['met'] else 'no'} |")
    lines += [
        "",
        "## frames against a sequential decode (uniform, 1 reader; untimed)",
        "",
        f"Frames whose thumbnail differs from a plain decode's of the same index by more than "
        f"{WRONG_FRAME:g} of 255 on average (another frame; resizers differ by about 1), and the "
        "largest difference.",
        "",
        "| clip | decoder | wrong frames | largest difference |",
        "|---|---|---|---|",
    ]
    for clip, by_decoder in report["frames_check"].items():
        for label, check in by_decoder.items():
            lines.append(
                f"| {clip} | {label} | {check['wrong']} of {check['of']} | {check['max_difference']} |"
            )
    lines += ["", f"torchcodec: {report['torchcodec']}", ""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clips = list(report["arms"])
    names = [n for n in report["arms"][clips[0]] if not n.startswith("full")]
    fig, ax = plt.subplots(figsize=(10, 0.4 * len(names) * len(clips) + 1.5))
    height = 0.8 / len(clips)
    for c, clip in enumerate(clips):
        rows = report["arms"][clip]
        medians = [rows[n]["of_full_decode"]["median"] for n in names]
        errors = np.array(
            [[rows[n]["of_full_decode"]["median"] - rows[n]["of_full_decode"]["ci95"][0],
              rows[n]["of_full_decode"]["ci95"][1] - rows[n]["of_full_decode"]["median"]] for n in names]
        ).T  # fmt: skip
        ax.barh(np.arange(len(names)) + c * height, medians, height, xerr=errors, label=clip)
    ax.axvline(0.2, color="k", linestyle="--", linewidth=0.8)
    ax.set_yticks(np.arange(len(names)) + height * (len(clips) - 1) / 2, names)
    ax.set_xscale("log")
    ax.set_xlabel("time / full decode of the same clip in the same round (median, 95% interval)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
