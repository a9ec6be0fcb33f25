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
