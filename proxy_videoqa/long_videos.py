"""Long videos for the long-video phase: L clips in a row, already reduced to a subset of
their tokens, each kept token at the position the whole video gives it.

Why reduced: serving a video longer than the context keeps a tenth of its tokens at
their original M-RoPE positions (sharp_plugin/vllm/positions.py), so a model that
answers from them must read sparse tokens far apart. Training on the kept tokens only
keeps sequences under 1k while positions reach those of 64 clips (8,192 tokens).

Why cached features: the vision tower sees each temporal group alone (Qwen2.5-VL's
attention windows never cross frames), so a clip's 128 merged tokens are the same
wherever it sits in a long video. The tower stays frozen; `FeaturePool` runs it once
per clip.

Questions, each answered by one token:
- `colour`: "What colour is the {shape}?": the shape appears once in the video;
- `first`: "What colour is the first {shape}?": the shape appears in two clips, in two
  colours; order matters, so a selection that mixes up segments fails it;
- `count`: "How many times does the {shape} appear?" (1-3): every appearance must be
  kept, so it punishes a selection that starves some segments.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .clips import SHAPES, SPLITS, Clip, make_clip
from .geometry import CELLS, GRID_T, SECONDS_PER_GROUP, TOKENS_PER_SECOND, VIDEO_TOKENS

KINDS = ("colour", "first", "count")
COUNT_ANSWERS = ("1", "2", "3")
LENGTHS = (1, 2, 4, 8, 16, 32, 64)  # clips per video in training
FILLS = ("uniform", "random", "objects")  # how the rest of the budget is chosen


def question(kind: str, shape: str) -> str:
    if kind == "colour":
        return f"What colour is the {shape}?"
    if kind == "first":
        return f"What colour is the first {shape}?"
    if kind == "count":
        return f"How many times does the {shape} appear?"
    raise ValueError(f"unknown question kind {kind!r}; expected one of {KINDS}")


def video_positions(num_clips: int) -> torch.Tensor:
    """(t, h, w) of every token of `num_clips` clips played as one video, from 0, in
    vLLM's order (t, then h, then w). # [3, num_clips * VIDEO_TOKENS] long"""
    step = int(TOKENS_PER_SECOND * SECONDS_PER_GROUP)
    t, h, w = torch.meshgrid(
        torch.arange(num_clips * GRID_T) * step, torch.arange(CELLS), torch.arange(CELLS), indexing="ij"
    )
    return torch.stack([t, h, w]).reshape(3, -1)


@dataclass(frozen=True)
class LongExample:
    clips: tuple[int, ...]  # FeaturePool indices, in playing order
    kept: np.ndarray  # ascending indices among the video's len(clips) * 128 tokens
    kind: str
    question: str
    answer: str
    asked_tokens: tuple[int, ...]  # the video tokens the answer depends on (all kept)

    @property
    def num_clips(self) -> int:
        return len(self.clips)


@dataclass
class FeaturePool:
    """Clips and their merged tower features, grouped by what the composer needs."""

    clips: list[Clip]
    features: torch.Tensor | None = None  # [len(clips), 128, D] float32, filled by `encode`
    by_target_shape: dict[str, list[int]] = field(default_factory=dict)  # standard query clips
    without_shape: dict[str, list[int]] = field(default_factory=dict)  # haystack candidates

    @classmethod
    def build(cls, first_seed: int, count: int) -> FeaturePool:
        """`count` clips from consecutive seeds: 70% standard `query` (the needles), the
        rest `single` and the other splits (haystack, and the short tasks kept in the mix)."""
        clips = []
        for seed in range(first_seed, first_seed + count):
            rng = np.random.default_rng([seed, 11])
            draw = rng.random()
            if draw < 0.7:
                clips.append(make_clip(seed, "query", "standard"))
            elif draw < 0.85:
                clips.append(make_clip(seed, "single", SPLITS[rng.integers(len(SPLITS))]))
            else:
                clips.append(make_clip(seed, "query", SPLITS[1 + rng.integers(len(SPLITS) - 1)]))
        pool = cls(clips)
        pool.index()
        return pool

    def index(self) -> None:
        self.by_target_shape = {shape: [] for shape in SHAPES}
        self.without_shape = {shape: [] for shape in SHAPES}
        for i, clip in enumerate(self.clips):
            shapes = {obj.shape for obj in clip.objects}
            if clip.task == "query" and clip.split == "standard":
                self.by_target_shape[next(o.shape for o in clip.objects if o.is_target)].append(i)
            for shape in SHAPES:
                if shape not in shapes:
                    self.without_shape[shape].append(i)

    @torch.no_grad()
    def encode(self, model, batch: int = 64) -> None:
        from .geometry import GRID_H, GRID_W
        from .pixels import patchify

        out = []
        for start in range(0, len(self.clips), batch):
            chunk = self.clips[start : start + batch]
            pixels = torch.from_numpy(np.concatenate([patchify(c.frames) for c in chunk]))
            grid = torch.tensor([[GRID_T, GRID_H, GRID_W]] * len(chunk))
            merged = model.model.get_video_features(pixels, grid).pooler_output
            out.append(torch.stack(list(merged)).float())
        self.features = torch.cat(out)


def _objects_of_shape(clip: Clip, shape: str) -> list:
    return [o for o in clip.objects if o.shape == shape]


def compose(pool: FeaturePool, rng: np.random.Generator, num_clips: int, kind: str, keep: float, fill: str):
    """One long video and its question; `keep` is the share of tokens kept (1.0: all)."""
    shape = SHAPES[rng.integers(len(SHAPES))]
    appearances = {"colour": 1, "first": 2, "count": int(rng.integers(1, 4))}[kind]
    appearances = min(appearances, num_clips)
    if kind == "first" and appearances < 2:
        kind, appearances = "colour", 1
    needles: list[int] = []
    for _ in range(100):  # `first` wants two colours; almost always found at once
        needles = list(rng.choice(pool.by_target_shape[shape], size=appearances, replace=False))
        colours = {_objects_of_shape(pool.clips[i], shape)[0].colour for i in needles}
        if kind != "first" or len(colours) == 2:
            break
    haystack = list(rng.choice(pool.without_shape[shape], size=num_clips - appearances, replace=False))
    slots = sorted(rng.choice(num_clips, size=appearances, replace=False).tolist())
    order: list[int] = []
    for position in range(num_clips):
        order.append(needles[slots.index(position)] if position in slots else haystack.pop())
    asked = []
    for position, index in enumerate(order):
        for obj in _objects_of_shape(pool.clips[index], shape):
            asked.append(position * VIDEO_TOKENS + obj.token)
    first_clip = pool.clips[order[slots[0]]]
    answer = {
        "colour": first_clip.answer,
        "first": _objects_of_shape(first_clip, shape)[0].colour,
        "count": COUNT_ANSWERS[appearances - 1],
    }[kind]
    total = num_clips * VIDEO_TOKENS
    kept = keep_tokens(pool, order, asked, total, keep, fill, rng)
    return LongExample(tuple(order), kept, kind, question(kind, shape), answer, tuple(sorted(asked)))


def keep_tokens(pool, order, asked, total: int, keep: float, fill: str, rng) -> np.ndarray:
    """The asked tokens, then `fill` up to round(keep * total) tokens."""
    budget = max(len(asked), round(keep * total))
    if budget >= total:
        return np.arange(total)
    rest = np.setdiff1d(np.arange(total), asked)
    need = budget - len(asked)
    if fill == "uniform":
        chosen = rest[np.linspace(0, len(rest) - 1, need).round().astype(int)] if need else rest[:0]
    elif fill == "random":
        chosen = rng.choice(rest, size=need, replace=False)
    elif fill == "objects":  # what an attention-based selection keeps: salient tokens first
        objects = np.array(
            [p * VIDEO_TOKENS + o.token for p, i in enumerate(order) for o in pool.clips[i].objects]
        )
        objects = np.setdiff1d(objects, asked)
        objects = rng.permutation(objects)[:need]
        others = rng.choice(np.setdiff1d(rest, objects), size=need - len(objects), replace=False)
        chosen = np.concatenate([objects, others])
    else:
        raise ValueError(f"unknown fill {fill!r}; expected one of {FILLS}")
    return np.sort(np.concatenate([np.asarray(asked), chosen]).astype(np.int64))
