"""torchcodec (an optional extra: `pip install 'sharp-serve[torchcodec]'`): exact seeks from
its own frame index, resized inside the decoder; on `device: cuda`, NVDEC. Its PyPI wheel
links CUDA, so it loads only where CUDA is installed (the GPU image), not on CPU-only hosts
(docs/vllm-cpu.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import VideoInfo, invalid


class TorchCodecDecoder:
    def __init__(self, device: str = "cpu"):
        self.device = device

    def _decoder(self, path: Path, threads: int = 1, size: tuple[int, int] | None = None):
        from torchcodec.decoders import VideoDecoder
        from torchcodec.transforms import Resize

        try:
            return VideoDecoder(
                str(path),
                dimension_order="NHWC",
                num_ffmpeg_threads=threads,
                device=self.device,
                seek_mode="exact",
                transforms=[Resize(size)] if size else None,
            )
        except (RuntimeError, ValueError) as exc:  # torchcodec's errors for what FFmpeg cannot open
            raise invalid() from exc

    def probe(self, path: Path) -> VideoInfo:
        decoder = self._decoder(path)
        metadata = decoder.metadata
        try:
            # Not public API: torchcodec has no public accessor for the keyframe index yet.
            keyframes = tuple(sorted(int(i) for i in decoder._get_key_frame_indices())) or (0,)
        except (AttributeError, RuntimeError):
            keyframes = (0,)
        return VideoInfo(
            num_frames=int(metadata.num_frames or 0),
            fps=float(metadata.average_fps or 0.0),
            width=int(metadata.width or 0),
            height=int(metadata.height or 0),
            keyframes=keyframes,
        )

    def read(
        self, path: Path, info: VideoInfo, indices: list[int], width: int, height: int, threads: int
    ) -> np.ndarray:
        decoder = self._decoder(path, threads, size=(height, width))
        try:
            return decoder.get_frames_at(indices).data.cpu().numpy()
        except (RuntimeError, IndexError) as exc:
            raise invalid("The video could not be decoded") from exc
