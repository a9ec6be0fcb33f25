"""A video's change measured before the tower (sharp_plugin/core/redundancy.py): which
groups are static, and the `auto` budget, on token means built here by hand."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sharp_plugin.core import SharpSettings, kept_count
from sharp_plugin.core.redundancy import (
    MAX_THRESHOLD_RAISE,
    auto_kept_count,
    measure_change,
    present_token_indices,
    video_budget,
)


def still(groups: int = 6, tokens: int = 4, level: float = 0.5) -> torch.Tensor:
    """Token means [G, T, parts, C] of a video that never changes."""
    return torch.full((groups, tokens, 4, 3), level)


def test_a_still_video_skips_every_group_but_the_first():
    change = measure_change(still(), 0.03, skip_static=True)
    assert change.skipped_groups == (1, 2, 3, 4, 5)
    assert change.new_tokens == 4 and change.present_tokens == 4


def test_one_part_of_one_token_moving_keeps_its_group():
    means = still()
    means[3, 2, 1, 0] += 0.05  # one channel of one patch of one token, in group 3 only
    change = measure_change(means, 0.03, skip_static=True)
    # 3 changed from 2; 4 changed back from 3 (the last kept); 5 repeats 4.
    assert change.skipped_groups == (1, 2, 5)
    assert change.new_tokens == 4 + 1 + 1


def test_a_slow_drift_is_compared_with_the_last_kept_group_so_it_ends_a_static_run():
    means = still(groups=8)
    for group in range(8):
        means[group] += 0.01 * group  # 0.01 a group: never over 0.03 from the group before
    change = measure_change(means, 0.03, skip_static=True)
    assert change.skipped_groups == (1, 2, 3, 5, 6, 7)  # group 4 is 0.04 from group 0
    assert change.new_tokens == 4  # from group to group nothing changed


def test_named_groups_stay_and_become_the_reference():
    change = measure_change(still(), 0.03, skip_static=True, keep_groups=(3,))
    assert change.skipped_groups == (1, 2, 4, 5)


def test_noise_raises_the_threshold_at_most_by_its_cap():
    generator = torch.Generator().manual_seed(0)
    noisy = still(groups=8, tokens=64) + 0.01 * torch.randn(8, 64, 4, 3, generator=generator)
    change = measure_change(noisy, 0.01, skip_static=True)
    assert change.noise_floor > 0.01 and change.threshold == MAX_THRESHOLD_RAISE * 0.01
    quiet = measure_change(noisy, 0.2, skip_static=True)  # the threshold already clears the noise
    assert quiet.threshold == 0.2 and quiet.skipped_groups == tuple(range(1, 8))


def test_present_tokens_are_the_kept_groups_tokens_in_order():
    assert present_token_indices(4, 3, (1, 3)).tolist() == [0, 1, 2, 6, 7, 8]


def test_auto_keeps_its_share_of_the_new_tokens_within_its_bounds():
    means = still(groups=10, tokens=10)
    means[5:] += 0.5  # a cut at group 5: 10 + 10 new tokens of 100
    change = measure_change(means, 0.03, skip_static=False)
    assert change.new_tokens == 20 and change.novelty == 0.2
    assert auto_kept_count(change, 0.02, 0.5) == 10  # half the new tokens
    assert auto_kept_count(change, 0.15, 0.5) == 15  # the lower bound, 0.15 of 100
    assert auto_kept_count(change, 0.02, 0.05) == 2  # 0.05 x 20 = 1, raised to 0.02 of 100
    busy = measure_change(torch.rand(10, 10, 4, 3, generator=torch.Generator().manual_seed(1)), 0.03,
                          skip_static=False)  # fmt: skip
    assert busy.novelty > 0.9
    assert auto_kept_count(busy, 0.02, 0.05) == 5  # never past the upper bound, 0.05 of 100


@settings(max_examples=200, deadline=None)
@given(
    groups=st.integers(1, 12),
    tokens=st.integers(1, 9),
    changes=st.lists(st.integers(0, 11), max_size=12),
    bounds=st.tuples(st.floats(0.01, 1.0), st.floats(0.01, 1.0)).map(sorted),
    skip=st.booleans(),
)
def test_the_budget_and_the_selections_count_always_agree(groups, tokens, changes, bounds, skip):
    """Whatever the video: `auto` stays within its bounds and the tokens the tower makes,
    and the resolved retention gives the worker's kept_count exactly the placeholders'."""
    means = still(groups=groups, tokens=tokens)
    for group in changes:
        if group < groups:
            means[group:] += 0.1
    low, high = bounds
    parsed = SharpSettings(retention="auto", min_retention=low, max_retention=high, skip_static=skip)
    change = measure_change(means, parsed.change_threshold, skip_static=skip)
    resolved, kept = video_budget(parsed, groups * tokens, change)
    present = change.present_tokens
    assert 1 <= kept <= present
    assert kept <= max(kept_count(high, groups * tokens), 1)
    assert kept >= min(kept_count(low, groups * tokens), present)
    assert kept_count(resolved.retention, present) == kept
    assert measure_change(means, parsed.change_threshold, skip_static=skip) == change  # deterministic
