"""The held-out clips: a seed range training never draws from, balanced over tasks and splits."""

from __future__ import annotations

from collections.abc import Iterator

from .clips import SPLITS, TASKS, Clip, make_clip

HELD_OUT_SEED = 1_000_000_000  # training seeds count up from 0 and never get here


def held_out_clips(per_task_and_split: int) -> Iterator[Clip]:
    for task in TASKS:
        for split in SPLITS:
            for i in range(per_task_and_split):
                yield make_clip(HELD_OUT_SEED + i, task, split)
