import torch

from sharp_plugin.core.masks import attention_mask, visibility_end


def test_zero_segments_is_plain_causal():
    end = visibility_end(prefix_len=3, num_visual=8, query_len=2, tokens_per_group=2, segment_groups=0)
    assert torch.equal(attention_mask(end), torch.ones(13, 13, dtype=torch.bool).tril())


def test_segment_mask_is_block_causal_over_visual_tokens_only():
    prefix, n, query, per_group = 2, 12, 3, 2  # 6 temporal groups of 2 tokens
    mask = attention_mask(visibility_end(prefix, n, query, per_group, segment_groups=2))
    vis = lambda i: prefix + i  # noqa: E731
    # Within a segment (groups 0-1 = visual 0..3) both ways.
    assert mask[vis(0), vis(3)] and mask[vis(3), vis(0)]
    # A later segment sees the earlier one and the prefix; an earlier one never sees later.
    assert mask[vis(4), vis(3)] and mask[vis(4), 0]
    assert not mask[vis(3), vis(4)]
    # Text stays causal: the prefix sees no visual token, query rows are causal.
    assert not mask[1, vis(0)]
    q0 = prefix + n
    assert mask[q0, : q0 + 1].all() and not mask[q0, q0 + 1 :].any()


def test_last_segment_is_clipped_to_the_video():
    end = visibility_end(prefix_len=0, num_visual=5, query_len=1, tokens_per_group=1, segment_groups=4)
    assert end.tolist() == [3, 3, 3, 3, 4, 5]


def test_segment_local_rows_see_the_prefix_and_their_own_segment_only():
    from sharp_plugin.core.masks import SegmentMask, visibility

    # prefix 2, 4 groups of 1 token, 2 groups per segment, query 2: rows 0-1 | 2-3 | 4-5 | 6-7
    mask = visibility(2, 4, 2, tokens_per_group=1, mask=SegmentMask(2, local=True)).mask().int()
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0, 0, 0],  # segment 0 both ways
            [1, 1, 1, 1, 0, 0, 0, 0],
            [1, 1, 0, 0, 1, 1, 0, 0],  # segment 1: not segment 0
            [1, 1, 0, 0, 1, 1, 0, 0],
            [1, 1, 1, 1, 1, 1, 1, 0],  # the query sees everything before it
            [1, 1, 1, 1, 1, 1, 1, 1],
        ]
    )
    assert torch.equal(mask, expected)
    block = visibility(2, 4, 2, tokens_per_group=1, mask=SegmentMask(2)).mask().int()
    assert torch.equal(block[4:6, 2:4], torch.ones(2, 2, dtype=torch.int32))  # block-causal sees segment 0
