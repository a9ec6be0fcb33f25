"""The GPU run's decode stage: whether decoding on the GPU beats the server's CPU decode.

Arms, interleaved over rounds on one generated clip (H.264, 60 s of 720p in a real run):
- `cpu`: the server's own decode (server/media/video.py: decord2, `uniform`, 2 readers);
- `cuda: decord2`: decord2 with `decord.gpu(0)` (NVDEC where its build has it);
- `cuda: torchcodec`: torchcodec's VideoDecoder on `device="cuda"`, where it is installed.
Each GPU arm decodes the same frame indices and copies the frames to the host, as the
processor needs them there (decord2 at the frame budget's size, torchcodec at the
source's). A GPU arm that does not load or decode is recorded with the reason instead of
timed (the CPU rehearsal, --tiny, tries both too: the attempt is the step rehearsed).
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
from bench.decode import clip_path
from server.media import video
from server.settings import MediaSettings

SOURCES = ["server/media/video.py", "bench/gpu_decode.py", "bench/decode.py"]
FRAMES = 32


def _gpu_arms(clip: Path, indices: list[int], width: int, height: int) -> dict[str, Callable[[], int]]:
    def decord_gpu() -> int:
        import decord

        reader = decord.VideoReader(str(clip), ctx=decord.gpu(0), width=width, height=height)
        return len(reader.get_batch(indices).asnumpy())

    def torchcodec_cuda() -> int:
        from torchcodec.decoders import VideoDecoder

        decoder = VideoDecoder(str(clip), dimension_order="NHWC", device="cuda")
        # At the source size (resizing on the device would be one more kernel): the
        # decode and the copy to the host are what is timed.
        return len(decoder.get_frames_at(indices).data.cpu().numpy())

    return {"cuda: decord2": decord_gpu, "cuda: torchcodec": torchcodec_cuda}


def decode_stage(out: Path, *, tiny: bool, rounds: int) -> dict:
    clip = clip_path("16s-240p" if tiny else "60s-720p")
    limits = MediaSettings(max_frames=FRAMES, max_frame_pixels=448 * 448, max_video_seconds=3600)
    info = video.probe(clip)
    indices = video.sample_indices(info, limits, num_frames=FRAMES)
    width, height = video.target_size(info.width, info.height, limits.max_frame_pixels)

    def cpu() -> int:
        return len(video.decode(clip, limits, num_frames=FRAMES, sampling="uniform", readers=2).frames)

    arms: dict[str, Callable[[], int]] = {"cpu: decord2, 2 readers": cpu}
    not_run: dict[str, str] = {}
    for name, arm in _gpu_arms(clip, indices, width, height).items():
        try:  # the warm-up, and whether it loads and decodes here at all
            decoded = arm()
        except Exception as exc:  # e.g. no CUDA device, a build without NVDEC, no torchcodec
            not_run[name] = f"{type(exc).__name__}: {str(exc)[:300]}"
            continue
        if decoded != len(indices):
            not_run[name] = f"decoded {decoded} frames of {len(indices)}"
            continue
        arms[name] = arm
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
