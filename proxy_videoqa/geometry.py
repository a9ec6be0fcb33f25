"""Clip geometry, shared by the generator, the trainer, the benchmark and the server config.

A clip is 16 frames of 112x112 at 2 fps (an 8 s clip). Qwen2.5-VL cuts it into
14-px patches, pairs frames (temporal patch 2) and merges 2x2 patches, so the LLM sees
8 temporal groups x 4 x 4 cells = 128 video tokens. Each cell is a 28x28-px square of
one frame pair.
"""

NUM_FRAMES = 16
FRAME_SIZE = 112
FPS = 2.0
PATCH = 14
MERGE = 2
TEMPORAL_PATCH = 2
# Qwen2.5-VL's vision config: M-RoPE temporal positions advance by
# tokens_per_second * seconds per temporal group (2 * 1.0 = 2 here).
TOKENS_PER_SECOND = 2

GRID_T = NUM_FRAMES // TEMPORAL_PATCH  # 8 temporal groups
GRID_H = GRID_W = FRAME_SIZE // PATCH  # 8 x 8 patches before the merge
CELLS = GRID_H // MERGE  # 4 x 4 LLM tokens per temporal group
CELL_PX = PATCH * MERGE  # 28 px
VIDEO_TOKENS = GRID_T * CELLS * CELLS  # 128
SECONDS_PER_GROUP = TEMPORAL_PATCH / FPS
FRAME_PIXELS = FRAME_SIZE * FRAME_SIZE  # the processor's pixel budget: frames are never rescaled


def token_index(group: int, row: int, col: int) -> int:
    """Index of a cell among the video's LLM tokens (vLLM's order: t, then h, then w)."""
    return (group * CELLS + row) * CELLS + col
