"""The Qwen2-VL video processor's pixel layout, reproduced so training need not run it.

tests/proxy checks it against the processor the saved checkpoint ships with.
"""

from __future__ import annotations

import numpy as np

from .geometry import GRID_H, GRID_T, GRID_W, MERGE, PATCH, TEMPORAL_PATCH

# CLIP normalisation, as in Qwen2-VL's processor config.
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def patchify(frames: np.ndarray) -> np.ndarray:
    """uint8 [T, H, W, 3] -> float32 [grid_t * grid_h * grid_w, 3 * 2 * 14 * 14]."""
    x = (frames.astype(np.float32) / 255.0 - MEAN) / STD
    x = x.transpose(0, 3, 1, 2)  # T C H W
    x = x.reshape(GRID_T, TEMPORAL_PATCH, 3, GRID_H // MERGE, MERGE, PATCH, GRID_W // MERGE, MERGE, PATCH)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return np.ascontiguousarray(x.reshape(GRID_T * GRID_H * GRID_W, 3 * TEMPORAL_PATCH * PATCH * PATCH))
