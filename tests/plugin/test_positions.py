"""The M-RoPE position channels (no engine needed)."""

import numpy as np
import torch

from sharp_plugin.vllm import positions


def test_channels_survive_bf16_up_to_65535():
    values = torch.tensor([0, 1, 255, 256, 257, 771, 4097, 65535])
    item_positions = torch.stack([values, values % 97, values % 89], dim=1)  # [N, 3]
    embeddings = torch.randn(len(values), 16, dtype=torch.bfloat16)
    kept = torch.tensor([1, 4, 7])
    encoded = positions.encode_kept(embeddings, item_positions, kept)
    assert encoded.dtype == torch.bfloat16
    decoded_embeddings, decoded = positions.decode(encoded)
    assert torch.equal(decoded_embeddings, embeddings[kept])
    assert torch.equal(decoded[:3].T, item_positions[kept])
    # The text after the item continues at the item's max position + 1, kept or not.
    assert decoded[3].tolist() == [65536] * 3


def _stock_positions(num_tokens, media):
    """vLLM 0.32's stock Qwen2.5-VL formula (unpruned), written out independently."""
    parts, start = [], 0
    for offset, t, h, w, scale in media:
        begin = parts[-1].max() + 1 if parts else 0
        parts.append(np.tile(np.arange(offset - start), (3, 1)) + begin)
        grid = np.indices((t, h, w))
        grid[0] = (grid[0] * scale).astype(np.int64)
        parts.append(grid.reshape(3, -1) + begin + offset - start)
        start = offset + t * h * w
    begin = parts[-1].max() + 1
    parts.append(np.tile(np.arange(num_tokens - start), (3, 1)) + begin)
    return np.concatenate(parts, axis=1)


def test_unpruned_prompt_table_matches_stock():
    media = [(5, 4, 3, 3, 40.0), (5 + 36 + 4, 1, 2, 2, 1.0)]
    num_tokens = 5 + 36 + 4 + 4 + 7
    table, delta = positions.prompt_positions_with_pruned_media(
        num_tokens,
        [(off, t * h * w, positions.grid_positions(t, h, w, s)) for off, t, h, w, s in media],
    )
    expected = _stock_positions(num_tokens, media)
    assert np.array_equal(table.numpy(), expected)
    assert delta == expected.max() + 1 - num_tokens


def test_pruned_first_video_does_not_break_the_second():
    # Stock code advances by the full grid (36) although only 9 placeholders remain,
    # which made the next text length negative. Text must follow the grid's max + 1.
    first = positions.grid_positions(4, 3, 3, 40.0)
    second = positions.grid_positions(1, 2, 2, 1.0)
    table, _ = positions.prompt_positions_with_pruned_media(
        5 + 9 + 3 + 2 + 4, [(5, 9, first), (17, 2, second)]
    )
    assert table.shape == (3, 23)
    after_first = table[:, 14]
    assert after_first.tolist() == [5 + 120 + 1] * 3  # t max = 3 * 40 = 120
