"""The GPU run's decode stage: whether decoding on the GPU beats the server's CPU decode.

Arms, interleaved over rounds on one generated clip (H.264, 60 s of 720p in a real run):
- `cpu`: the server's default decode (server/media/video.py: pyav, `uniform`, 2 readers);
- `cuda: decord2`: the server's decode with `media.decode_device: cuda` (NVDEC where
  decord's build has it);
- `cuda: torchcodec`: the same with `media.decoder: torchcodec`, where it is installed.
Every arm is the server's own `video.decode` of the same frames at the frame budget's
size, back on the host, as the processor needs them. A GPU arm that does not load or
decode is recorded with the reason instead of timed (the CPU rehearsal, --tiny, tries
both too: the attempt is the step rehearsed).
Speed-ups are the CPU arm's time over the GPU arm's, per round, as a median with a 95%
bootstrap interval. Writes <out>/decode.json.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from bench.common.results import provenance
from bench.common.stats import median_with_interval, ratio
from bench.decode import bench_limits, clip_path
from server.media import video

SOURCES = ["server/media/video.py", "server/media/decoders", "bench/gpu_decode.py", "bench/decode.py"]
FRAMES = 32


def decode_stage(out: Path, *, tiny: bool, rounds: int) -> dict:
    clip = clip_path("16s-240p" if tiny else "60s-720p")
    limits = bench_limits(FRAMES)

    def arm(decoder: str, device: str, readers: int) -> Callable[[], int]:
        def run() -> int:
            decoded = video.decode(
                clip, limits, num_frames=FRAMES, sampling="uniform", readers=readers,
                decoder=decoder, device=device,
            )  # fmt: skip
            return len(decoded.frames)

        return run

    cpu = arm("pyav", "cpu", 2)
    arms: dict[str, Callable[[], int]] = {"cpu: pyav, 2 readers": cpu}
    not_run: dict[str, str] = {}
    gpu_arms = {"cuda: decord2": arm("decord", "cuda", 1), "cuda: torchcodec": arm("torchcodec", "cuda", 1)}
    for name, gpu_arm in gpu_arms.items():
        try:  # the warm-up, and whether it loads and decodes here at all
            decoded = gpu_arm()
        except Exception as exc:  # e.g. no CUDA device, a build without NVDEC, no torchcodec
            cause = f" ({type(exc.__cause__).__name__}: {exc.__cause__})" if exc.__cause__ else ""
            not_run[name] = f"{type(exc).__name__}: {exc}{cause}"[:400]
            continue
        if decoded != FRAMES:
            not_run[name] = f"decoded {decoded} frames of {FRAMES}"
            continue
        arms[name] = gpu_arm
    cpu()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in arms}
    names = list(arms)
    for index in range(rounds):
        for name in names[index % len(names) :] + names[: index % len(names)]:
            started = time.perf_counter()
            arms[name]()
            times[name].append(time.perf_counter() - started)
    cpu_name = names[0]
    result = {
        "provenance": provenance(SOURCES),
        "clip": clip.name,
        "frames": FRAMES,
        "rounds": rounds,
        "seconds": {name: median_with_interval(values) for name, values in times.items()},
        "speedup_over_cpu": {
            name: ratio(times[cpu_name], values) for name, values in times.items() if name != cpu_name
        },
        "not_run": not_run,
    }
    (out / "decode.json").write_text(json.dumps(result, indent=1) + "\n")
    return result
