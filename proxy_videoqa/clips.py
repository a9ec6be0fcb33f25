"""Deterministic synthetic clips whose single-word answer depends on one or two video tokens.

Tasks:
- ``single``: "What colour is the shape?" with one object in the clip. Saliency alone
  finds it; it is also the curriculum that teaches the vision tower colours.
- ``query``: "What colour is the {shape}?" among 1-3 distractors of other shapes and
  other colours, so only a query-aware selection keeps the right token.

Splits, each stressing one of ShaRP's failure modes:
- ``standard``: the target is in any temporal group;
- ``early``: the target is in the first quarter of the clip and the distractors after
  it (positional bias towards tokens near the question);
- ``redundant``: a static background (near-duplicate frames) and each distractor
  repeated at the same place over 3-6 consecutive groups (near-duplicate tokens);
- ``small``: the target has a third of the usual radius' area, so its token is
  mostly background (local aggregation).

Every object lies inside one 28x28 cell of one frame pair, so the target ("needle") is
one LLM token of 128 (0.8%; the limit asked is 3%).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import CELL_PX, CELLS, FRAME_SIZE, GRID_T, NUM_FRAMES, TEMPORAL_PATCH, token_index

TASKS = ("single", "query")
SPLITS = ("standard", "early", "redundant", "small")
SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 80, 230),
    "yellow": (230, 220, 40),
    "white": (240, 240, 240),
}
COLOUR_NAMES = tuple(COLOURS)
ANSWERS = COLOUR_NAMES

STANDARD_RADIUS = (10.0, 13.0)
SMALL_RADIUS = (5.0, 7.0)
EARLY_GROUPS = GRID_T // 4  # the target of an `early` clip is in groups 0-1 of 8
REDUNDANT_RUN = (3, 6)  # a redundant distractor repeats over this many groups (inclusive)

_ys, _xs = np.mgrid[0:FRAME_SIZE, 0:FRAME_SIZE].astype(np.float32)


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    group: int  # temporal group: drawn on frames 2*group and 2*group + 1
    row: int  # cell row and column (4 x 4 cells of 28 px)
    col: int
    cx: float
    cy: float
    radius: float
    is_target: bool

    @property
    def token(self) -> int:
        return token_index(self.group, self.row, self.col)


@dataclass(frozen=True)
class Clip:
    seed: int
    task: str
    split: str
    frames: np.ndarray  # uint8 [NUM_FRAMES, FRAME_SIZE, FRAME_SIZE, 3]
    question: str
    answer: str
    objects: tuple[SceneObject, ...]

    def questions(self) -> list[tuple[str, str]]:
        """(question, answer) about every distinct object, the clip's own question first.

        Training asks them all as follow-up turns: each is one more retrieval example for
        the same video at the cost of a few text tokens.
        """
        return list(self._questions_and_tokens())

    def question_tokens(self) -> list[list[int]]:
        """For each of `questions()`, the video tokens of the object it asks about."""
        return list(self._questions_and_tokens().values())

    def _questions_and_tokens(self) -> dict[tuple[str, str], list[int]]:
        asked = {(self.question, self.answer): self.needle_tokens}
        if self.task == "query":
            for obj in (o for o in self.objects if not o.is_target):
                asked.setdefault((f"What colour is the {obj.shape}?", obj.colour), []).append(obj.token)
        return asked

    @property
    def needle_tokens(self) -> list[int]:
        """The video tokens the answer depends on (the target's cells)."""
        return sorted({o.token for o in self.objects if o.is_target})


def shape_mask(shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    dx, dy = _xs - cx, _ys - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (np.abs(dx) <= 0.8 * r) & (np.abs(dy) <= 0.8 * r)
    if shape == "triangle":  # apex up, base 2r wide
        return (dy <= r) & (np.abs(dx) <= (dy + r) / 2)
    if shape == "cross":
        arm = 0.32 * r
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))
    raise ValueError(f"unknown shape {shape!r}")


class _Scene:
    """Places objects on free (group, cell) slots, each inside its cell."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.used: set[tuple[int, int, int]] = set()
        self.objects: list[SceneObject] = []

    def free_cell(self, groups: range | list[int]) -> tuple[int, int, int]:
        slots = [(g, r, c) for g in groups for r in range(CELLS) for c in range(CELLS)]
        slots = [s for s in slots if s not in self.used]
        return slots[self.rng.integers(len(slots))]

    def place(self, shape, colour, group, row, col, radius, is_target, centre=None):
        if centre is None:
            # Jitter the centre as far as the object still fits inside its cell.
            slack = max(0.0, CELL_PX / 2 - 1 - radius)
            centre = (
                col * CELL_PX + CELL_PX / 2 + self.rng.uniform(-slack, slack),
                row * CELL_PX + CELL_PX / 2 + self.rng.uniform(-slack, slack),
            )
        self.used.add((group, row, col))
        self.objects.append(SceneObject(shape, colour, group, row, col, *centre, radius, is_target))
        return centre


def _background(rng: np.random.Generator, static: bool) -> np.ndarray:
    """Dark tint + blocky texture + pixel noise (one noise image for all frames if static)."""
    base = rng.uniform(40, 110, size=3)
    blocks = FRAME_SIZE // 16 + 1
    texture = np.kron(rng.normal(0, 18, size=(blocks, blocks, 3)), np.ones((16, 16, 1)))
    texture = texture[:FRAME_SIZE, :FRAME_SIZE]
    noise_frames = 1 if static else NUM_FRAMES
    noise = 14 * rng.standard_normal((noise_frames, FRAME_SIZE, FRAME_SIZE, 3), dtype=np.float32)
    frames = (base + texture).astype(np.float32) + noise
    return np.broadcast_to(frames, (NUM_FRAMES, FRAME_SIZE, FRAME_SIZE, 3)).copy()


def make_clip(seed: int, task: str, split: str) -> Clip:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    rng = np.random.default_rng([seed, TASKS.index(task), SPLITS.index(split)])
    frames = _background(rng, static=split == "redundant")
    scene = _Scene(rng)

    shape_order = rng.permutation(len(SHAPES))
    colour_order = rng.permutation(len(COLOUR_NAMES))
    target_shape, target_colour = SHAPES[shape_order[0]], COLOUR_NAMES[colour_order[0]]
    target_groups = range(EARLY_GROUPS) if split == "early" else range(GRID_T)
    radius = rng.uniform(*(SMALL_RADIUS if split == "small" else STANDARD_RADIUS))
    scene.place(target_shape, target_colour, *scene.free_cell(target_groups), radius, is_target=True)

    if task == "query":
        # Distractors have other shapes and other colours than the target and each other.
        for k in range(1, 1 + int(rng.integers(1, 4))):
            shape, colour = SHAPES[shape_order[k]], COLOUR_NAMES[colour_order[k]]
            distractor_groups = range(EARLY_GROUPS, GRID_T) if split == "early" else range(GRID_T)
            radius = rng.uniform(*STANDARD_RADIUS)
            if split == "redundant":
                _place_repeated(scene, shape, colour, radius)
            else:
                scene.place(shape, colour, *scene.free_cell(distractor_groups), radius, is_target=False)
        question = f"What colour is the {target_shape}?"
    else:
        question = "What colour is the shape?"

    for obj in scene.objects:
        mask = shape_mask(obj.shape, obj.cx, obj.cy, obj.radius)
        colour = np.array(COLOURS[obj.colour]) + rng.normal(0, 10, size=3)
        for frame in range(obj.group * TEMPORAL_PATCH, (obj.group + 1) * TEMPORAL_PATCH):
            frames[frame][mask] = colour
    frames = np.clip(frames, 0, 255).astype(np.uint8)
    return Clip(seed, task, split, frames, question, target_colour, tuple(scene.objects))


def _place_repeated(scene: _Scene, shape: str, colour: str, radius: float) -> None:
    """One distractor at one place over a run of consecutive groups whose cells are free."""
    rng = scene.rng
    length = int(rng.integers(REDUNDANT_RUN[0], REDUNDANT_RUN[1] + 1))
    runs = [
        (start, row, col)
        for start in range(GRID_T - length + 1)
        for row in range(CELLS)
        for col in range(CELLS)
        if all((g, row, col) not in scene.used for g in range(start, start + length))
    ]
    start, row, col = runs[rng.integers(len(runs))]
    centre = None
    for group in range(start, start + length):
        centre = scene.place(shape, colour, group, row, col, radius, is_target=False, centre=centre)


def cell_labels(clip: Clip) -> tuple[np.ndarray, np.ndarray]:
    """Per video token: colour class and shape class (0 = background).

    Training-only targets for the auxiliary heads; never part of the saved model.
    """
    colour = np.zeros(GRID_T * CELLS * CELLS, dtype=np.int64)
    shape = np.zeros_like(colour)
    for obj in clip.objects:
        colour[obj.token] = 1 + COLOUR_NAMES.index(obj.colour)
        shape[obj.token] = 1 + SHAPES.index(obj.shape)
    return colour, shape
