"""The clip generator: deterministic, and each split is what it claims to be."""

import numpy as np
import pytest

from proxy_videoqa.clips import (
    CELL_PX,
    COLOURS,
    EARLY_GROUPS,
    SMALL_RADIUS,
    SPLITS,
    STANDARD_RADIUS,
    TASKS,
    cell_labels,
    make_clip,
    shape_mask,
)
from proxy_videoqa.geometry import TEMPORAL_PATCH, VIDEO_TOKENS
from proxy_videoqa.held_out import HELD_OUT_SEED, held_out_clips

CASES = [(task, split) for task in TASKS for split in SPLITS]


@pytest.mark.parametrize("task,split", CASES)
def test_same_seed_same_clip_other_seed_other_clip(task, split):
    a, b, c = make_clip(3, task, split), make_clip(3, task, split), make_clip(4, task, split)
    assert np.array_equal(a.frames, b.frames) and a.question == b.question and a.objects == b.objects
    assert not np.array_equal(a.frames, c.frames)


@pytest.mark.parametrize("task,split", CASES)
def test_needle_is_a_few_tokens_and_the_answer_is_its_colour(task, split):
    for seed in range(40):
        clip = make_clip(seed, task, split)
        assert 1 <= len(clip.needle_tokens) <= 0.03 * VIDEO_TOKENS
        (target,) = [o for o in clip.objects if o.is_target]
        assert clip.answer == target.colour
        # Every object lies inside its own 28-px cell of its own frame pair.
        for obj in clip.objects:
            mask = shape_mask(obj.shape, obj.cx, obj.cy, obj.radius)
            ys, xs = np.nonzero(mask)
            assert ys.min() // CELL_PX == ys.max() // CELL_PX == obj.row
            assert xs.min() // CELL_PX == xs.max() // CELL_PX == obj.col
        # The target's pixels carry its colour (up to the colour jitter) in its frames only.
        mask = shape_mask(target.shape, target.cx, target.cy, target.radius)
        frames = range(target.group * TEMPORAL_PATCH, (target.group + 1) * TEMPORAL_PATCH)
        for f in frames:
            assert np.abs(clip.frames[f][mask].mean(0) - COLOURS[target.colour]).max() < 40


@pytest.mark.parametrize("split", SPLITS)
def test_query_distractors_differ_from_the_target_in_shape_and_colour(split):
    for seed in range(40):
        clip = make_clip(seed, "query", split)
        (target,) = [o for o in clip.objects if o.is_target]
        assert clip.question == f"What colour is the {target.shape}?"
        distractors = {(o.shape, o.colour) for o in clip.objects if not o.is_target}
        assert 1 <= len(distractors) <= 3
        assert all(s != target.shape and c != target.colour for s, c in distractors)
        assert len({s for s, _ in distractors}) == len({c for _, c in distractors}) == len(distractors)


def test_early_split_puts_the_target_first_and_distractors_after():
    for seed in range(40):
        clip = make_clip(seed, "query", "early")
        for obj in clip.objects:
            assert (obj.group < EARLY_GROUPS) == obj.is_target


def test_redundant_split_repeats_distractors_over_a_static_background():
    for seed in range(20):
        clip = make_clip(seed, "query", "redundant")
        drawn = np.zeros(clip.frames.shape[:3], dtype=bool)
        for obj in clip.objects:
            mask = shape_mask(obj.shape, obj.cx, obj.cy, obj.radius)
            drawn[obj.group * TEMPORAL_PATCH : (obj.group + 1) * TEMPORAL_PATCH] |= mask
        background = ~drawn.any(0)  # pixels no object ever covers
        assert (clip.frames[:, background] == clip.frames[0, background]).all()
        runs = {}
        for obj in clip.objects:
            if not obj.is_target:
                runs.setdefault((obj.shape, obj.row, obj.col), []).append(obj.group)
        for groups in runs.values():
            assert 3 <= len(groups) <= 6 and groups == list(range(groups[0], groups[0] + len(groups)))
    other = make_clip(0, "query", "standard")
    assert not np.array_equal(other.frames[0], other.frames[2])  # per-frame noise elsewhere


def test_small_split_shrinks_only_the_target():
    for seed in range(40):
        clip = make_clip(seed, "query", "small")
        for obj in clip.objects:
            low, high = SMALL_RADIUS if obj.is_target else STANDARD_RADIUS
            assert low <= obj.radius <= high


def test_cell_labels_mark_exactly_the_object_tokens():
    clip = make_clip(1, "query", "redundant")
    colour, shape = cell_labels(clip)
    assert set(np.nonzero(colour)[0]) == set(np.nonzero(shape)[0]) == {o.token for o in clip.objects}


def test_held_out_is_balanced_and_outside_the_training_seeds():
    clips = list(held_out_clips(3))
    assert len(clips) == 3 * len(CASES)
    assert {(c.task, c.split) for c in clips} == set(CASES)
    assert min(c.seed for c in clips) == HELD_OUT_SEED


def test_unknown_task_or_split_is_refused():
    with pytest.raises(ValueError, match="task"):
        make_clip(0, "where", "standard")
    with pytest.raises(ValueError, match="split"):
        make_clip(0, "query", "late")


def test_questions_cover_each_object_once_with_its_tokens():
    clip = make_clip(1, "query", "redundant")
    pairs, tokens = clip.questions(), clip.question_tokens()
    assert pairs[0] == (clip.question, clip.answer) and tokens[0] == clip.needle_tokens
    for (question, answer), asked in zip(pairs, tokens, strict=True):
        objects = [o for o in clip.objects if question == f"What colour is the {o.shape}?"]
        assert {o.colour for o in objects} == {answer} and sorted(o.token for o in objects) == asked
    assert len(pairs) == len({(o.shape, o.colour) for o in clip.objects})
