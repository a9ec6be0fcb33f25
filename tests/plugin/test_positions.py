"""The M-RoPE position channels (no engine needed)."""

import numpy as np
import pytest
import torch

from sharp_plugin.vllm import positions


def test_channels_survive_bf16_up_to_65535():
    values = torch.tensor([0, 1, 255, 256, 257, 771, 4097, 65535])
    item_positions = torch.stack([values, values % 97, values % 89], dim=1)  # [N, 3]
    embeddings = torch.randn(len(values), 16, dtype=torch.bfloat16)
    kept = torch.tensor([1, 4, 7])
    encoded = positions.with_position_channels(embeddings[kept], item_positions, kept)
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


VS, VE, VIDEO, IMAGE, TEXT = 1, 2, 9, 8, 5


def _prompt_with_media(layout):
    """Token ids and the initial table for text/media segments: ("text", n) or
    (token_id, grid_t, grid_h, grid_w, kept_count) wrapped in vision start/end."""
    ids, media, items = [], [], []
    for segment in layout:
        if segment[0] == "text":
            ids += [TEXT] * segment[1]
            continue
        token, t, h, w, kept_count = segment
        ids.append(VS)
        grid = positions.grid_positions(t, h, w, 1.0)
        kept = torch.from_numpy(np.sort(np.random.RandomState(len(ids)).choice(t * h * w, kept_count, False)))
        media.append((len(ids), kept_count, grid))
        item_positions = torch.from_numpy(grid.T.copy())
        _, channels = positions.decode(
            positions.with_position_channels(torch.zeros(kept_count, 4), item_positions, kept)
        )
        items.append(channels)
        ids += [token] * kept_count
        ids.append(VE)
    table, _ = positions.prompt_positions_with_pruned_media(len(ids), media)
    return torch.tensor(ids), table, items


LAYOUTS = {
    "one video": [("text", 4), (VIDEO, 2, 3, 4, 10), ("text", 6)],
    "two videos, text between": [
        ("text", 3),
        (VIDEO, 2, 2, 2, 5),
        ("text", 4),
        (VIDEO, 3, 2, 2, 7),
        ("text", 2),
    ],
    "image then video": [("text", 2), (IMAGE, 1, 3, 3, 9), ("text", 1), (VIDEO, 2, 3, 3, 6), ("text", 3)],
}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_kept_positions_are_the_same_however_prefill_is_chunked(name):
    ids, table, items = _prompt_with_media(LAYOUTS[name])
    whole, whole_delta = positions.place_kept_positions(ids, items, table, 0, (IMAGE, VIDEO))
    runs = [i for i in range(len(ids)) if ids[i] in (IMAGE, VIDEO)]
    assert whole[:, runs].max() < whole[:, -1].max(), "text after the media continues past it"
    # Every chunk size, every start: each chunk passes the slices of the items it covers,
    # in order, as vLLM's runner does (a chunk may start right after a vision start).
    for chunk in range(1, len(ids) + 1):
        placed = table.clone()
        for computed in range(0, len(ids), chunk):
            stop = min(computed + chunk, len(ids))
            slices, offset = [], 0
            for item in items:
                rows = [r for r in range(len(ids)) if ids[r] in (IMAGE, VIDEO)][
                    offset : offset + item.shape[1]
                ]
                offset += item.shape[1]
                inside = [k for k, r in enumerate(rows) if computed <= r < stop]
                if inside:
                    slices.append(item[:, inside[0] : inside[-1] + 1])
            placed, delta = positions.place_kept_positions(ids, slices, placed, computed, (IMAGE, VIDEO))
        assert torch.equal(placed, whole), (name, chunk)
        assert delta == whole_delta
