"""The selection rule on hand-built tensors: each fix does its job, budgets are exact,
order is kept, and the same input gives the same output."""

import pytest
import torch
import torch.nn.functional as F

from sharp_plugin.core import ScoringResult, SharpSettings, kept_count, select_tokens
from sharp_plugin.core.dedup import deduplicated_top_k
from sharp_plugin.core.masks import SegmentMask
from sharp_plugin.core.scores import mean_visual_scores, query_attention_sums
from sharp_plugin.core.settings import LOCAL_MASK_FROM_TOKENS

DIM = 16


class PlantedBiasScorer:
    """A one-layer attention whose keys carry a content-agnostic positional term that grows
    with the token index, the way RoPE-induced bias favours late tokens. A needle adds a
    logit of 3; the bias adds up to 3 * bias_strength (4 at 4/3: late noise beats needles)."""

    def __init__(self, num_tokens: int, bias_strength: float):
        torch.manual_seed(0)
        self.query = F.normalize(torch.randn(DIM), dim=0) * 3.0
        position = torch.arange(num_tokens, dtype=torch.float32) / num_tokens
        self.positional = bias_strength * position[:, None] * F.normalize(self.query, dim=0)

    def __call__(self, visual: torch.Tensor, mask: SegmentMask) -> ScoringResult:
        keys = (visual + self.positional)[None]  # [1, N, D]
        rows = self.query[None, None, :]  # [1, 1, D], one head and one query row
        n = visual.shape[0]
        sums = query_attention_sums(rows, keys, torch.tensor([n - 1]), scale=1.0)
        return ScoringResult(mean_visual_scores(sums, 1, 1, 0, n), visual)

    def black_prior(self, mask: SegmentMask) -> torch.Tensor:
        return self(torch.zeros_like(self.positional), mask).scores


def planted_video(num_tokens: int, informative: list[int], scorer: PlantedBiasScorer):
    torch.manual_seed(1)
    visual = torch.randn(num_tokens, DIM) * 0.02
    direction = F.normalize(scorer.query, dim=0)
    for i in informative:
        visual[i] += 1.0 * direction
    return visual


@pytest.mark.parametrize("calibration", ["subtract", "divide"])
def test_debiasing_recovers_early_needles_that_fastv_misses(calibration):
    n, informative = 64, [2, 5, 9]
    scorer = PlantedBiasScorer(n, bias_strength=4 / 3)
    visual = planted_video(n, informative, scorer)
    retention = len(informative) / n

    fastv = select_tokens(SharpSettings(method="fastv", retention=retention), visual, scorer)
    assert all(i >= n // 2 for i in fastv.kept.tolist()), "the bias should drive fastv late"

    sharp = SharpSettings(
        method="sharp",
        retention=retention,
        debias="black",
        calibration=calibration,
        segment_frames=0,
        dedup_threshold=1.0,
    )
    debiased = select_tokens(sharp, visual, scorer, black_prior=scorer.black_prior)
    assert debiased.kept.tolist() == informative


def test_mean_prior_also_removes_the_positional_bias():
    n, informative = 64, [2, 5, 9]
    scorer = PlantedBiasScorer(n, bias_strength=4 / 3)
    visual = planted_video(n, informative, scorer)
    settings = SharpSettings(
        method="sharp",
        retention=3 / n,
        debias="mean",
        calibration="divide",
        segment_frames=0,
        dedup_threshold=1.0,
    )
    assert select_tokens(settings, visual, scorer).kept.tolist() == informative


def test_dedup_keeps_one_token_per_group_of_near_duplicates():
    torch.manual_seed(0)
    groups, per_group = 6, 5
    bases = F.normalize(torch.randn(groups, 32), dim=1)
    features = bases.repeat_interleave(per_group, 0) + 0.01 * torch.randn(groups * per_group, 32)
    scores = torch.rand(groups * per_group)
    kept = deduplicated_top_k(scores, features, k=groups, threshold=0.9)
    assert sorted((kept // per_group).tolist()) == list(range(groups))
    plain = deduplicated_top_k(scores, features, k=groups, threshold=1.0)
    assert len(set((plain // per_group).tolist())) < groups, "plain top-k should repeat a group"


def test_dedup_fills_the_budget_with_the_best_skipped_tokens():
    features = torch.ones(10, 4)  # all identical: every token after the first is a duplicate
    scores = torch.arange(10, dtype=torch.float32)
    kept = deduplicated_top_k(scores, features, k=4, threshold=0.5)
    assert kept.tolist() == [9, 8, 7, 6]


def _random_scorer(visual, mask: SegmentMask):
    """Scores that depend on the content (a fixed projection) and on the segment width,
    so determinism and plumbing are tested through the scores, not around them."""
    direction = torch.sin(torch.arange(visual.shape[1], dtype=torch.float32) * 12.9898)
    scores = visual.float() @ direction + 0.01 * mask.groups + 0.001 * mask.local
    return ScoringResult(scores, visual)


METHODS = ["none", "sharp", "fastv", "uniform", "random", "oracle"]


@pytest.mark.parametrize("method", METHODS)
def test_budget_is_exact_and_order_is_kept_for_every_n_and_r(method):
    for n in [1, 2, 3, 7, 64, 129, 512, 1000]:
        visual = torch.randn(n, 8)
        for retention in [0.01, 0.05, 0.1, 0.25, 1 / 3, 0.5, 0.999, 1.0]:
            settings = SharpSettings(method=method, retention=retention, debias="mean")
            kept = select_tokens(settings, visual, _random_scorer).kept
            expected = n if method == "none" else kept_count(retention, n)
            assert kept.numel() == expected, (method, n, retention)
            assert kept.unique().numel() == expected
            assert torch.all(kept[1:] > kept[:-1]), "original order is kept"
            assert int(kept.min()) >= 0 and int(kept.max()) < n


def test_kept_count_rounds_halves_up():
    assert kept_count(0.5, 81) == 41  # round(40.5) would give 40
    assert kept_count(0.001, 10) == 1
    assert kept_count(1.0, 7) == 7


@pytest.mark.parametrize("method", METHODS)
def test_same_input_same_output(method):
    torch.manual_seed(3)
    visual = torch.randn(200, 8)
    settings = SharpSettings(method=method, retention=0.2, debias="mean", dedup_threshold=0.5)
    first = select_tokens(settings, visual, _random_scorer).kept
    second = select_tokens(settings, visual.clone(), _random_scorer).kept
    assert torch.equal(first, second)


@pytest.mark.parametrize("method", ["sharp", "fastv"])
def test_scored_methods_follow_the_content(method):
    torch.manual_seed(3)
    visual = torch.randn(200, 8)
    settings = SharpSettings(method=method, retention=0.2, debias="mean", dedup_threshold=0.5)
    first = select_tokens(settings, visual, _random_scorer).kept
    assert not torch.equal(first, select_tokens(settings, -visual, _random_scorer).kept)


def test_random_depends_on_the_seed():
    visual = torch.randn(200, 8)
    a = select_tokens(SharpSettings(method="random", retention=0.2, seed=1), visual).kept
    b = select_tokens(SharpSettings(method="random", retention=0.2, seed=2), visual).kept
    assert not torch.equal(a, b)


def test_uniform_spreads_over_the_whole_video():
    kept = select_tokens(SharpSettings(method="uniform", retention=0.1), torch.zeros(100, 2)).kept
    assert kept.tolist() == list(range(5, 100, 10))


def test_segment_mask_reaches_the_scoring_pass():
    seen = []

    def scorer(visual, mask):
        seen.append(mask)
        return _random_scorer(visual, mask)

    visual = torch.randn(32, 8)
    select_tokens(
        SharpSettings(method="sharp", retention=0.5, segment_frames=3, debias="mean"), visual, scorer
    )
    select_tokens(
        SharpSettings(method="sharp", retention=0.5, segment_frames=3, segment_mask="local", debias="off"),
        visual,
        scorer,
    )
    select_tokens(SharpSettings(method="fastv", retention=0.5, segment_frames=3), visual, scorer)
    block, local = SegmentMask(3), SegmentMask(3, local=True)
    assert seen == [block, block, local, SegmentMask(0)]


@pytest.mark.parametrize(
    ("kind", "tokens", "local"),
    [("auto", LOCAL_MASK_FROM_TOKENS - 1, False), ("auto", LOCAL_MASK_FROM_TOKENS, True),
     ("block_causal", 1 << 20, False), ("local", 8, True)],
)  # fmt: skip
def test_auto_turns_local_for_long_videos_only(kind, tokens, local):
    settings = SharpSettings(segment_mask=kind)
    assert settings.segment_mask_for(tokens) == SegmentMask(4, local=local)
    # Without segments there is nothing to make local: the plain causal mask.
    assert settings.model_copy(update={"segment_frames": 0}).segment_mask_for(tokens) == SegmentMask(0)


def _naive_dedup(scores, features, k, threshold):
    """The definition, written out token by token."""
    unit = F.normalize(features.float(), dim=-1)
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    kept, skipped = [], []
    for i in order:
        if any(float(unit[i] @ unit[j]) >= threshold for j in kept):
            skipped.append(i)
        else:
            kept.append(i)
        if len(kept) == k:
            break
    return kept + skipped[: k - len(kept)]


@pytest.mark.parametrize("seed", range(12))
def test_blocked_dedup_equals_the_definition(seed):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(2, 700, (1,), generator=g))
    base = torch.randn(max(1, n // 7), 24, generator=g)  # clusters: many near-duplicates
    features = base[torch.randint(0, base.shape[0], (n,), generator=g)] + 0.3 * torch.randn(
        n, 24, generator=g
    )
    scores = torch.rand(n, generator=g)
    for threshold in (0.3, 0.8, 0.95):
        k = int(torch.randint(1, n + 1, (1,), generator=g))
        got = deduplicated_top_k(scores, features, k, threshold).tolist()
        assert got == _naive_dedup(scores, features, k, threshold), (n, k, threshold)


def test_oracle_keeps_the_named_tokens_first_then_spreads_the_rest():
    visual = torch.zeros(100, 2)
    kept = select_tokens(SharpSettings(method="oracle", retention=0.05, oracle_tokens=(42, 7)), visual).kept
    assert {42, 7} <= set(kept.tolist()) and kept.numel() == 5
    others = [i for i in kept.tolist() if i not in (42, 7)]
    assert max(others) - min(others) > 50  # the fill is spread, not bunched
    # A budget smaller than the list keeps the list's first entries.
    few = select_tokens(SharpSettings(method="oracle", retention=0.02, oracle_tokens=(42, 7, 9)), visual)
    assert few.kept.tolist() == [7, 42]


@pytest.mark.parametrize("debias", ["mean", "black"])
def test_the_prior_is_scored_before_the_video_so_their_passes_never_overlap(debias):
    """The video's own pass returns its hidden states ([N, D], kept for dedup): scored
    first, they were alive through the prior's whole pass, a peak of two passes' worth."""
    import weakref

    scorer = PlantedBiasScorer(64, 1.0)
    alive_during_prior: list[bool] = []
    video_results: list[weakref.ref] = []

    def prior_pass(mask):
        alive_during_prior.append(any(ref() is not None for ref in video_results))
        return scorer.black_prior(mask)

    def scoring_pass(visual, mask):
        if debias == "mean" and bool((visual == visual[:1]).all()):  # the mean prior's video
            return ScoringResult(prior_pass(mask), visual)
        result = ScoringResult(scorer(visual, mask).scores, visual.clone())
        video_results.append(weakref.ref(result.hidden))
        return result

    visual = torch.randn(64, DIM)
    settings = SharpSettings(method="sharp", retention=0.25, debias=debias)
    selection = select_tokens(
        settings, visual, scoring_pass, black_prior=prior_pass if debias == "black" else None
    )
    assert selection.kept.numel() == kept_count(0.25, 64)
    assert alive_during_prior == [False]
