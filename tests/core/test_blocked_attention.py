"""The blocked attention kernel (sharp_plugin/core/blocked_attention.py) against
PyTorch's reference attention with the same mask, over causal, block-causal and
segment-local layouts, grouped heads, several row blocks and both dtypes the engine
runs in."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from sharp_plugin.core.blocked_attention import DEFAULT_BUDGET, TEMPORARIES, BlockBudget, blocked_attention
from sharp_plugin.core.masks import SegmentMask, attention_mask, visibility, visibility_end

# Blocks of a few rows: every layout is cut into several blocks with partial masks.
SMALL_BLOCKS = BlockBudget(scratch_bytes=1, min_rows=4)


@settings(max_examples=40, deadline=None)
@given(
    prefix=st.integers(0, 6),
    groups=st.integers(1, 5),
    tokens_per_group=st.integers(1, 9),
    query=st.integers(1, 7),
    segment_groups=st.integers(0, 3),
    local=st.booleans(),
    kv_heads=st.sampled_from([1, 2]),
    group=st.sampled_from([1, 3]),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    seed=st.integers(0, 2**31 - 1),
)
def test_blocked_attention_matches_reference_attention(
    prefix, groups, tokens_per_group, query, segment_groups, local, kv_heads, group, dtype, seed
):
    num_visual = groups * tokens_per_group
    seen = visibility(prefix, num_visual, query, tokens_per_group, SegmentMask(segment_groups, local))
    seq_len, head_dim = len(seen), 8
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(kv_heads * group, seq_len, head_dim, generator=gen).to(dtype)
    k = torch.randn(kv_heads, seq_len, head_dim, generator=gen).to(dtype)
    v = torch.randn(kv_heads, seq_len, head_dim, generator=gen).to(dtype)

    # Tiny blocks: every layout is cut into several row blocks with partial masks.
    got = blocked_attention(q, k, v, head_dim**-0.5, seen, budget=BlockBudget(scratch_bytes=1, min_rows=3))

    expected = F.scaled_dot_product_attention(
        q.float(),
        k.float().repeat_interleave(group, 0),
        v.float().repeat_interleave(group, 0),
        attn_mask=seen.mask(),
        scale=head_dim**-0.5,
    )
    assert got.dtype == dtype
    tolerance = 1e-5 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(got.float(), expected, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("segment_groups", [0, 2])
def test_a_row_never_attends_past_its_visible_end(segment_groups):
    """Changing keys and values a row cannot see leaves that row's output unchanged."""
    end = visibility_end(3, 24, 5, 4, segment_groups)
    q, k, v = (torch.randn(2, end.numel(), 8) for _ in range(3))
    before = blocked_attention(q, k, v, 0.3, end, budget=SMALL_BLOCKS)
    row = 10
    k2, v2 = k.clone(), v.clone()
    k2[:, int(end[row]) + 1 :] = 100.0
    v2[:, int(end[row]) + 1 :] = -100.0
    after = blocked_attention(q, k2, v2, 0.3, end, budget=SMALL_BLOCKS)
    torch.testing.assert_close(after[:, row], before[:, row])
    assert not torch.allclose(after[:, -1], before[:, -1])


def test_the_block_causal_visibility_is_the_end_only_mask():
    seen = visibility(3, 24, 5, 4, SegmentMask(2))
    assert torch.equal(seen.mask(), attention_mask(visibility_end(3, 24, 5, 4, 2)))


def test_a_segment_local_row_never_sees_another_segment():
    """Keys and values of other segments do not change a local row's output; the query
    rows still see every segment."""
    prefix, per_group, groups_per_segment = 3, 4, 2
    seen = visibility(prefix, 24, 5, per_group, SegmentMask(groups_per_segment, local=True))
    q, k, v = (torch.randn(2, len(seen), 8) for _ in range(3))
    before = blocked_attention(q, k, v, 0.3, seen, budget=SMALL_BLOCKS)
    segment = prefix + 8 * torch.arange(3)[:, None] + torch.arange(8)  # [3 segments, 8 rows]
    k2, v2 = k.clone(), v.clone()
    k2[:, segment[[0, 2]].flatten()] = 100.0  # every segment but the middle one
    v2[:, segment[[0, 2]].flatten()] = -100.0
    after = blocked_attention(q, k2, v2, 0.3, seen, budget=SMALL_BLOCKS)
    torch.testing.assert_close(after[:, segment[1]], before[:, segment[1]])
    torch.testing.assert_close(after[:, :prefix], before[:, :prefix])
    assert not torch.allclose(after[:, -1], before[:, -1])


@pytest.mark.parametrize("local", [False, True], ids=["block-causal", "local"])
def test_every_block_of_logits_stays_under_the_scratch_budget(monkeypatch, local):
    """Blocks are sized by every column their rows reach. Sized by their first row
    alone, a video of small groups (the proxy model's 16 tokens) made one block of all
    its rows over all its columns: 1.1 GB of logits in the engine at 8k tokens."""
    num_heads, kv_heads, length = 4, 2, 10 + 4096 + 20
    seen = visibility(10, 4096, 20, 16, SegmentMask(4, local=local))
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(num_heads, length, 8, generator=generator)
    k, v = (torch.randn(kv_heads, length, 8, generator=generator) for _ in range(2))
    logits_elements, real_bmm = [], torch.bmm

    def recording_bmm(a, b):
        out = real_bmm(a, b)
        if b.shape[-1] != q.shape[-1]:  # scores x keys, not probabilities x values
            logits_elements.append(out.numel())
        return out

    monkeypatch.setattr(torch, "bmm", recording_bmm)
    blocked_attention(q, k, v, 0.35, seen)
    budget = DEFAULT_BUDGET.scratch_bytes // (TEMPORARIES * 4)  # float32 elements
    assert len(logits_elements) > 1
    assert max(logits_elements) <= budget, (len(logits_elements), max(logits_elements))
