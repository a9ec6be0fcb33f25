"""Properties of the core over the whole settings space (hypothesis): any valid settings
and any N give exactly k sorted, unique, in-range indices; any invalid value of any
field is refused with an error that names that field."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sharp_plugin.core import ScoringResult, SharpSettingsError, kept_count, parse_settings, select_tokens
from sharp_plugin.core import settings as bounds

DIM = 8


class ContentScorer:
    """A stand-in for the decoder: scores and hidden states that depend on the content,
    with ties and duplicates common (few distinct values), the hard case for dedup."""

    def __call__(self, visual: torch.Tensor, segment_groups: int) -> ScoringResult:
        return ScoringResult(scores=visual[:, 0].float().softmax(0), hidden=visual)

    def black_prior(self, segment_groups: int) -> torch.Tensor:
        return torch.full((self.num_tokens,), 1.0 / self.num_tokens)


unit_float = st.floats(min_value=0.0, max_value=1.0, exclude_min=True, allow_nan=False)


@st.composite
def valid_settings(draw, num_tokens: int) -> dict:
    method = draw(st.sampled_from(["none", "sharp", "fastv", "uniform", "random", "oracle"]))
    chosen = {
        "method": method,
        "retention": draw(unit_float),
        "prune_layer": draw(st.integers(0, bounds.MAX_PRUNE_LAYER)),
        "segment_frames": draw(st.integers(0, bounds.MAX_SEGMENT_GROUPS)),
        "debias": draw(st.sampled_from(["off", "black", "mean"])),
        "calibration": draw(st.sampled_from(["subtract", "divide"])),
        "lam": draw(st.floats(0.0, bounds.MAX_LAM)),
        "dedup_threshold": draw(unit_float),
        "budget_spread": draw(st.sampled_from(["global", "segments"])),
        "seed": draw(st.integers(0, bounds.MAX_SEED)),
    }
    if method == "oracle":
        chosen["oracle_tokens"] = draw(st.lists(st.integers(0, num_tokens - 1), max_size=3 * num_tokens))
    # Any subset of fields may be left to its default.
    keep = draw(st.sets(st.sampled_from(sorted(chosen))))
    pinned = {"method", "oracle_tokens"} if method == "oracle" else set()
    return {name: value for name, value in chosen.items() if name in keep | pinned}


@settings(max_examples=300, deadline=None)
@given(data=st.data(), num_tokens=st.integers(1, 700), distinct=st.integers(1, 6))
def test_any_valid_settings_and_any_n_give_exactly_k_sorted_unique_indices(data, num_tokens, distinct):
    chosen = data.draw(valid_settings(num_tokens))
    parsed = parse_settings(chosen)
    levels = torch.arange(num_tokens) % distinct  # few distinct tokens: ties and duplicates
    visual = torch.nn.functional.one_hot(levels, DIM).float() + levels[:, None] / 10
    scorer = ContentScorer()
    scorer.num_tokens = num_tokens
    groups = torch.arange(num_tokens) // data.draw(st.integers(1, 40))  # tokens per temporal group
    selection = select_tokens(parsed, visual, scorer, scorer.black_prior, token_groups=groups)
    kept = selection.kept.tolist()
    expected = kept_count(parsed.retention, num_tokens) if parsed.prunes else num_tokens
    assert len(kept) == expected
    assert kept == sorted(set(kept))
    assert all(0 <= i < num_tokens for i in kept)


# For each field, values that must be refused (past a bound, wrong type, not finite).
INVALID = {
    "method": st.sampled_from(["magic", "", "SHARP", 1, None]),
    "retention": st.one_of(
        st.floats(max_value=0.0),
        st.floats(min_value=1.0, exclude_min=True),
        st.sampled_from([math.nan, math.inf, True, "0.5", None]),
    ),
    "prune_layer": st.one_of(
        st.integers(max_value=-1),
        st.integers(min_value=bounds.MAX_PRUNE_LAYER + 1),
        st.sampled_from([True, 1.5, "2", None]),
    ),
    "segment_frames": st.one_of(
        st.integers(max_value=-1),
        st.integers(min_value=bounds.MAX_SEGMENT_GROUPS + 1),
        st.sampled_from([False, 2.0, None]),
    ),
    "debias": st.sampled_from(["white", 0, None]),
    "calibration": st.sampled_from(["multiply", None]),
    "budget_spread": st.sampled_from(["even", "", 0, None]),
    "lam": st.one_of(
        st.floats(max_value=0.0, exclude_max=True),
        st.floats(min_value=bounds.MAX_LAM, exclude_min=True),
        st.sampled_from([math.nan, math.inf, True]),
    ),
    "dedup_threshold": st.one_of(
        st.floats(max_value=0.0),
        st.floats(min_value=1.0, exclude_min=True),
        st.sampled_from([math.nan, True]),
    ),
    "seed": st.one_of(
        st.integers(max_value=-1),
        st.integers(min_value=bounds.MAX_SEED + 1),
        st.sampled_from([True, 1.0, "1"]),
    ),
    "oracle_tokens": st.one_of(
        st.lists(st.integers(max_value=-1), min_size=1, max_size=3),
        st.lists(st.integers(min_value=bounds.MAX_VIDEO_TOKENS), min_size=1, max_size=3),
        st.lists(st.sampled_from([True, 1.5, "3"]), min_size=1, max_size=3),
        st.just([0] * (bounds.MAX_ORACLE_TOKENS + 1)),
        st.sampled_from([7, "1,2"]),
    ),
    "pruning_rate": st.one_of(
        st.floats(max_value=0.0, exclude_max=True),
        st.floats(min_value=1.0),
        st.sampled_from([math.nan, True, "0.5"]),
    ),
}


@settings(max_examples=400, deadline=None)
@given(data=st.data(), field=st.sampled_from(sorted(INVALID)))
def test_any_invalid_value_is_refused_naming_its_field(data, field):
    value = data.draw(INVALID[field])
    request = {"method": "oracle", "retention": 0.5} if field == "oracle_tokens" else {"retention": 0.5}
    if field == "pruning_rate":
        request = {}
    request[field] = value
    try:
        parse_settings(request)
    except SharpSettingsError as exc:
        assert exc.field is not None and exc.field.split(".")[0] == field, (field, value, exc.field)
        assert str(exc).startswith(f"sharp.{field}")
    else:
        raise AssertionError(f"{field}={value!r} was accepted")


def test_pruning_rate_keeps_the_count_of_the_matching_retention():
    # 1 - 0.9 == 0.09999999999999998: without rounding, N = 15 would keep 1 token, not 2.
    for rate in (0.9, 0.7, 0.3, 0.95, 0.85):
        by_rate = parse_settings({"pruning_rate": rate}).retention
        by_retention = parse_settings({"retention": round(1 - rate, 6)}).retention
        assert [kept_count(by_rate, n) for n in range(1, 400)] == [
            kept_count(by_retention, n) for n in range(1, 400)
        ]


@settings(max_examples=200, deadline=None)
@given(data=st.data(), num_tokens=st.integers(1, 300))
def test_oracle_selection_matches_its_definition(data, num_tokens):
    """The vectorised oracle against the plain definition: the first k distinct named
    tokens, then the rest of the budget spread uniformly over the others."""
    from fractions import Fraction

    from sharp_plugin.core.selection import oracle_indices

    k = data.draw(st.integers(1, num_tokens))
    priority = tuple(data.draw(st.lists(st.integers(0, num_tokens - 1), max_size=2 * num_tokens)))
    first = list(dict.fromkeys(priority))[:k]
    others = [i for i in range(num_tokens) if i not in first]
    slices = k - len(first)  # the rest of the budget: each of `others`' slices at its centre
    fill = [others[int(Fraction(2 * i + 1, 2 * slices) * len(others))] for i in range(slices)]
    assert oracle_indices(num_tokens, k, priority).tolist() == sorted(first + fill)


@settings(max_examples=200, deadline=None)
@given(
    other=st.integers(0, 5000),
    videos=st.lists(st.integers(1, 500_000), min_size=1, max_size=4),
    budget=st.integers(1, 200_000),
)
def test_fitting_retention_fits_and_is_the_largest_at_its_precision(other, videos, budget):
    from sharp_plugin.core.budget import fitting_retention

    def length(retention: float) -> int:
        return other + sum(kept_count(retention, n) for n in videos)

    retention = fitting_retention(other, videos, budget)
    if retention is None:
        assert other + len(videos) > budget  # not even one token per video fits
        return
    assert 0 < retention <= 1 and length(retention) <= budget
    if retention < 1 and retention >= 1e-4:
        assert length(round(retention + 1e-4, 4)) > budget  # the next 4-decimal value
