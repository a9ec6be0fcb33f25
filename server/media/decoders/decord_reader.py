"""decord (installed as decord2, its maintained fork: `import decord`): seek-samples with its
own frame index; on `device: cuda`, decodes with NVDEC where decord was built with CUDA."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import VideoInfo, invalid


class DecordDecoder:
    def __init__(self, device: str = "cpu"):
        self.device = device

    def _reader(self, path: Path, **kwargs):
        import decord

        context = decord.gpu(0) if self.device == "cuda" else decord.cpu(0)
        try:
            return decord.VideoReader(str(path), ctx=context, **kwargs)
        except Exception as exc:  # decord raises its own DECORDError and RuntimeError
            raise invalid() from exc

    def probe(self, path: Path) -> VideoInfo:
        reader = self._reader(path, num_threads=1)
        try:
            # Decodes one frame: a stream that opens but cannot decode is refused here.
            height, width = reader[0].shape[:2]
            fps = float(reader.get_avg_fps())
        except Exception as exc:
            raise invalid("The video has no decodable frames") from exc
        try:
            keyframes = tuple(sorted(int(i) for i in reader.get_key_indices())) or (0,)
        except Exception:  # decord's own errors: a container without an index is one long GOP
            keyframes = (0,)
        return VideoInfo(
            num_frames=len(reader), fps=fps, width=int(width), height=int(height), keyframes=keyframes
        )

    def read(
        self, path: Path, info: VideoInfo, indices: list[int], width: int, height: int, threads: int
    ) -> np.ndarray:
        reader = self._reader(path, width=width, height=height, num_threads=threads)
        try:
            return reader.get_batch(indices).asnumpy()
        except Exception as exc:
            raise invalid("The video could not be decoded") from exc
