"""What every decoder backend gives: a probe of the stream, and the frames asked for at the
size asked for. Sampling, limits and the split across readers are shared (video.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ...errors import UnsupportedMedia


class InvalidMedia(UnsupportedMedia):
    """Bytes that the decoder cannot decode as a video (corrupt, empty, unknown codec)."""


def invalid(message: str = "The file could not be decoded as a video") -> InvalidMedia:
    return InvalidMedia(message, param="video", code="invalid_video")


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    fps: float
    width: int
    height: int
    # Source indices of the keyframes, from the container's index ((0,) when it has none).
    keyframes: tuple[int, ...] = (0,)
    # Each frame's presentation timestamp in its stream's time base, in display order,
    # where the backend needs them to find frames by index (pyav); () otherwise.
    frame_pts: tuple[int, ...] = ()

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps


class Decoder(Protocol):
    """One backend. Both calls block (run them on a worker thread) and raise InvalidMedia
    for anything they cannot decode."""

    def probe(self, path: Path) -> VideoInfo: ...

    def read(
        self, path: Path, info: VideoInfo, indices: list[int], width: int, height: int, threads: int
    ) -> np.ndarray:
        """The frames at sorted `indices`, [T, height, width, 3] uint8 RGB, resized inside
        the decoder (never at full size in Python)."""
        ...
