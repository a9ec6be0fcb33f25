"""The long-video phase's data: what a composed video asks and keeps, the positions its
kept tokens train at (against the plugin's own placement), and a resumable run."""

import json

import numpy as np
import pytest
import torch

from proxy_videoqa import train_long
from proxy_videoqa.clips import SHAPES
from proxy_videoqa.geometry import VIDEO_TOKENS
from proxy_videoqa.long_videos import FILLS, KINDS, FeaturePool, compose, video_positions
from proxy_videoqa.tokenizer import VIDEO_PAD
from proxy_videoqa.train import proxy_tokenizer
from sharp_plugin.vllm import positions as plugin_positions

from ..conftest import PROXY_MODEL


@pytest.fixture(scope="module")
def pool():
    """Clips only: the composer never reads features; collate gets random ones."""
    pool = FeaturePool.build(train_long.TRAIN_POOL_SEED, 300)
    pool.features = torch.randn(len(pool.clips), VIDEO_TOKENS, 8)
    return pool


def objects_at(pool, example, token):
    clip = pool.clips[example.clips[token // VIDEO_TOKENS]]
    return [o for o in clip.objects if o.token == token % VIDEO_TOKENS]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fill", FILLS)
def test_a_composed_video_keeps_what_its_answer_needs_and_answers_right(pool, kind, fill):
    rng = np.random.default_rng(0)
    for num_clips in (4, 16):
        example = compose(pool, rng, num_clips, kind, 0.1, fill)
        (shape,) = [word for word in example.question.rstrip("?").split() if word in SHAPES]
        # Every appearance of the asked shape is an asked token, and nothing else is.
        appearances = [
            t
            for t in range(num_clips * VIDEO_TOKENS)
            if any(o.shape == shape for o in objects_at(pool, example, t))
        ]
        assert list(example.asked_tokens) == appearances
        assert set(example.asked_tokens) <= set(example.kept.tolist())
        assert len(example.kept) == round(0.1 * num_clips * VIDEO_TOKENS)
        assert np.all(np.diff(example.kept) > 0)
        colours = [objects_at(pool, example, t)[0].colour for t in appearances]
        if kind == "colour":
            assert len(appearances) == 1 and example.answer == colours[0]
        elif kind == "first":
            assert len(appearances) == 2 and len(set(colours)) == 2 and example.answer == colours[0]
        else:
            assert example.answer == str(len(appearances))


def test_fill_objects_keeps_other_objects_before_background(pool):
    rng = np.random.default_rng(1)
    example = compose(pool, rng, 16, "colour", 0.1, "objects")
    objects = [t for t in range(16 * VIDEO_TOKENS) if objects_at(pool, example, t)]
    assert len(objects) < len(example.kept)  # the budget exceeds the objects here
    assert set(objects) <= set(example.kept.tolist())


def test_kept_tokens_train_at_the_positions_the_plugin_serves_them_at(pool):
    tokenizer = proxy_tokenizer()
    video_id = tokenizer.convert_tokens_to_ids(VIDEO_PAD)
    rng = np.random.default_rng(2)
    examples = [compose(pool, rng, n, "colour", 0.1, "random") for n in (64, 8)]
    batch = train_long.collate_long(examples, pool, tokenizer, torch.nn.Embedding(1024, 8))
    for i, example in enumerate(examples):
        before, kept, after = train_long.sequence(tokenizer, example)
        ids = before + [video_id] * kept + after + [0, 0]
        grid = plugin_positions.media_positions((8 * example.num_clips, 8, 8), 2, t_scale=2.0)  # [N, 3]
        table, _ = plugin_positions.prompt_positions_with_pruned_media(
            len(ids), [(len(before), kept, grid.T.numpy())]
        )
        served, _ = plugin_positions.place_kept_positions(
            ids, [grid[torch.from_numpy(example.kept)].T], table, 0, [video_id]
        )
        assert torch.equal(batch.position_ids[:, i, : len(ids)], served)
    assert int(batch.position_ids.max()) > 1000  # 64 clips reach past 1,000


def test_video_positions_follow_vllms_token_order():
    positions = video_positions(2)
    assert positions.shape == (3, 2 * VIDEO_TOKENS)
    assert positions[:, VIDEO_TOKENS + 17].tolist() == [2 * (8 + 1), 0, 1]  # clip 2, group 1, row 0, col 1


def test_the_long_phase_resumes_and_exports_a_checkpoint(tmp_path):
    arguments = ["--work", str(tmp_path), "--init-from", str(PROXY_MODEL), "--steps", "2", "--pool", "200",
                 "--eval-per-cell", "2", "--eval-pool", "200", "--checkpoint-every", "1"]  # fmt: skip
    # The pools' tower features are cached in the work directory; random ones stand in, so
    # that the test pays for the phase's logic and not for 400 tower passes.
    for name, seed in (("train", train_long.TRAIN_POOL_SEED), ("eval", train_long.EVAL_POOL_SEED)):
        torch.save(torch.randn(200, VIDEO_TOKENS, 192), tmp_path / f"features-{name}-{seed}-200.pt")
    train_long.main([*arguments, "--stop-at", "1"])
    train_long.main([*arguments, "--export", str(tmp_path / "model")])
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    starts = [r["step"] for r in records if r.get("event") == "start"]
    assert starts == [0, 1]  # the second run resumed after the first one's step
    evals = [r for r in records if r.get("event") == "eval"]
    assert {name for name, *_ in train_long.EVAL_CELLS} <= set(evals[-1])
    assert all(0 <= evals[-1][name] <= 1 for name, *_ in train_long.EVAL_CELLS)
    assert json.loads((tmp_path / "model" / "training.json").read_text())["version"] == train_long.VERSION
    saved = (tmp_path / "model" / "model.safetensors").stat().st_size
    assert saved == (PROXY_MODEL / "model.safetensors").stat().st_size  # the same architecture, nothing added
