"""Spreading the budget over segments: quotas that add up, and a segment whose best token
scores below another segment's background still keeps it."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from sharp_plugin.core import ScoringResult, parse_settings, select_tokens
from sharp_plugin.core.segment_budget import segment_quotas, top_k_per_segment


@given(sizes=st.lists(st.integers(1, 200), min_size=1, max_size=40), share=st.floats(0.0, 1.0))
def test_quotas_sum_to_k_stay_within_each_segment_and_follow_its_size(sizes, share):
    sizes_t = torch.tensor(sizes)
    k = round(share * sum(sizes))
    quotas = segment_quotas(sizes_t, k)
    assert int(quotas.sum()) == k
    assert bool((quotas <= sizes_t).all()) and bool((quotas >= 0).all())
    exact = sizes_t.double() * k / sum(sizes)
    assert bool(((quotas - exact).abs() < 1).all())  # within one of the proportional share


def test_each_segment_keeps_its_best_tokens():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.05, 0.01, 0.02, 0.03])  # segment 0 outscores 1 everywhere
    segments = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    kept = top_k_per_segment(scores, torch.eye(8), segments, 4, threshold=1.0)
    assert sorted(kept.tolist()) == [0, 1, 4, 7]


def test_budget_spread_is_a_switch_of_the_selection():
    n, per_group = 64, 4  # 16 groups; segments of 4 groups = 16 tokens
    scores = torch.linspace(0, 1, n) ** 4  # later tokens draw the attention (positional bias)
    scores[5] = 0.01  # the needle: best of its segment, below every late token

    def scorer(visual, mask):
        return ScoringResult(scores, torch.eye(n))

    groups = torch.arange(n) // per_group
    common = {"method": "sharp", "retention": 0.125, "debias": "off", "dedup_threshold": 1.0}
    spread = select_tokens(
        parse_settings({**common, "budget_spread": "segments"}), torch.eye(n), scorer, token_groups=groups
    )
    top = select_tokens(parse_settings(common), torch.eye(n), scorer, token_groups=groups)
    assert 5 in spread.kept.tolist() and 5 not in top.kept.tolist()
    assert [int((spread.kept // 16 == s).sum()) for s in range(4)] == [2, 2, 2, 2]
