import torch

from sharp_plugin.core.scores import mean_visual_scores, query_attention_sums


def _naive(q, k, positions, scale):
    group = q.shape[0] // k.shape[0]
    k = k.repeat_interleave(group, 0)
    logits = (q @ k.transpose(1, 2)) * scale
    cols = torch.arange(k.shape[1])
    logits = logits.masked_fill(cols[None, None, :] > positions[None, :, None], float("-inf"))
    return logits.softmax(-1).sum(dim=(0, 1))


def test_grouped_query_sums_match_a_naive_full_attention():
    torch.manual_seed(0)
    heads, kv_heads, seq, dim, rows = 8, 2, 40, 16, 5
    q = torch.randn(heads, rows, dim)
    k = torch.randn(kv_heads, seq, dim)
    positions = torch.arange(seq - rows, seq)
    torch.testing.assert_close(query_attention_sums(q, k, positions, 0.25), _naive(q, k, positions, 0.25))


def test_query_rows_never_attend_to_the_future():
    torch.manual_seed(0)
    q, k = torch.randn(2, 3, 4), torch.randn(2, 10, 4)
    sums = query_attention_sums(q, k, torch.tensor([5, 6, 7]), 1.0)
    assert torch.all(sums[8:] == 0)
    # Each row's probabilities sum to one, per head: total = heads * rows.
    assert torch.isclose(sums.sum(), torch.tensor(6.0))


def test_mean_over_heads_and_rows_restricted_to_visual_columns():
    sums = torch.arange(10, dtype=torch.float32)
    scores = mean_visual_scores(sums, total_heads=2, num_rows=5, visual_start=3, num_visual=4)
    assert torch.equal(scores, torch.tensor([3.0, 4.0, 5.0, 6.0]) / 10)
