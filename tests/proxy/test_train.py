"""The trainer: exports a plain Qwen2.5-VL checkpoint and resumes from its own state."""

import json
import math

import torch
from safetensors import safe_open

from proxy_videoqa import train
from proxy_videoqa.clips import ANSWERS

from .conftest import log_records


def test_export_is_a_vanilla_checkpoint_without_the_aux_heads(trained_once):
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    model_dir = trained_once / "model"
    config = json.loads((model_dir / "config.json").read_text())
    assert config["architectures"] == [train.SHARP_ARCHITECTURE]
    with safe_open(model_dir / "model.safetensors", "pt") as weights:
        tensors = [weights.get_tensor(n) for n in weights.keys()]  # noqa: SIM118
    assert all(t.dtype == torch.bfloat16 for t in tensors)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir)
    # Every saved number is the model's: the aux heads were left behind.
    assert sum(t.numel() for t in tensors) == sum(p.numel() for p in model.parameters())
    tokenizer = AutoProcessor.from_pretrained(model_dir).tokenizer
    assert all(len(tokenizer.encode(a, add_special_tokens=False)) == 1 for a in ANSWERS)
    training = json.loads((model_dir / "training.json").read_text())
    assert training["version"] == train.VERSION and "--steps 2" in training["command"]


def test_losses_are_finite_and_the_held_out_eval_covers_every_split(trained_once):
    records = log_records(trained_once)
    evals = [r for r in records if r.get("event") == "eval"]
    losses = [r["loss"] for r in records if "loss" in r] + [r["aux"] for r in records if "aux" in r]
    assert evals and losses and all(math.isfinite(v) for v in losses)
    assert {"all", "single", "query", "query/early", "query/redundant", "query/small"} <= set(evals[-1])


def test_rerunning_resumes_from_the_last_checkpoint(trained_once):
    state = torch.load(trained_once / "state.pt", weights_only=True)
    assert state["step"] == 2
    train.main(["--work", str(trained_once), "--steps", "3", "--batch", "2", "--checkpoint-every", "1",
                "--eval-every", "100", "--eval-per-split", "1"])  # fmt: skip
    starts = [r for r in log_records(trained_once) if r.get("event") == "start"]
    assert [s["step"] for s in starts] == [0, 2]
    resumed = torch.load(trained_once / "state.pt", weights_only=True)
    assert resumed["step"] == 3
    changed = [n for n in state["model"] if not torch.equal(state["model"][n], resumed["model"][n])]
    assert changed  # the third step trained from the restored weights


def test_a_second_phase_starts_from_the_first_phases_weights(trained_once, tmp_path):
    # The first phase moved its weights by ~1e-5 (two warm-up steps) from the same seed-0
    # start a second phase would draw: shift them far away, so that a second phase that
    # ignored --init-from would end up nowhere near them.
    shifted = torch.load(trained_once / "state.pt", weights_only=True)
    shifted["model"] = {n: w + 0.5 if w.is_floating_point() else w for n, w in shifted["model"].items()}
    torch.save(shifted, tmp_path / "shifted.pt")
    work = tmp_path / "phase2"
    train.main(["--work", str(work), "--init-from", str(tmp_path / "shifted.pt"), "--steps", "10",
                "--stop-at", "1", "--batch", "2", "--query-splits", "standard", "--follow-ups",
                "--eval-every", "100", "--eval-per-split", "1", "--export", str(work / "model")])  # fmt: skip
    state = torch.load(work / "state.pt", weights_only=True)
    assert state["step"] == 1  # stopped early; the schedule spans 10 steps
    first = shifted["model"]
    # One warm-up step (lr 1e-5) away from the weights it started from.
    assert all(torch.allclose(state["model"][n], first[n], atol=1e-3) for n in first)
    assert any(not torch.equal(state["model"][n], first[n]) for n in first), "the step was taken"
    command = json.loads((work / "model" / "training.json").read_text())["command"]
    assert "--query-splits standard --follow-ups" in command and "--stop-at 1" in command
    start = [r for r in log_records(work) if r.get("event") == "start"]
    assert start[0]["args"]["init_from"].endswith("shifted.pt")


def test_query_splits_limit_only_the_query_task():
    clips = train.training_clips(0, 64, ("standard",))
    assert {c.split for c in clips if c.task == "query"} == {"standard"}
    assert len({c.split for c in clips if c.task == "single"}) > 1


def test_last_layer_attention_loss_rewards_attending_to_the_asked_object():
    from proxy_videoqa.batches import collate
    from proxy_videoqa.clips import make_clip

    tokenizer = train.proxy_tokenizer()
    clips = [make_clip(2, "query", "redundant")]
    batch = collate(clips, tokenizer, follow_ups=True)
    length = batch.inputs["input_ids"].shape[1]
    start = batch.inputs["input_ids"][0].tolist().index(batch.video_token_id)
    focused = torch.zeros(1, 2, length, length)
    rows = batch.target_positions[0, 0::2].tolist()
    for row, tokens in zip(rows, clips[0].question_tokens(), strict=True):
        focused[0, :, row, [start + t for t in tokens]] = 1.0 / len(tokens)
    assert train.attention_to_asked_objects(focused, batch, clips, follow_ups=True) < 1e-4
    uniform = torch.full((1, 2, length, length), 1.0 / length)
    assert train.attention_to_asked_objects(uniform, batch, clips, follow_ups=True) > 3.0


def test_the_asked_shape_probe_is_labelled_with_each_turns_shape():
    from proxy_videoqa.clips import SHAPES, make_clip

    clip = make_clip(3, "query", "standard")
    labels = train.asked_shapes(clip, follow_ups=True)
    assert [SHAPES[k] for k in labels] == [q.split()[-1].rstrip("?") for q, _ in clip.questions()]
    assert train.asked_shapes(make_clip(3, "single", "small"), follow_ups=True) == [len(SHAPES)]
