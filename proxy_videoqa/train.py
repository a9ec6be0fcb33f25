"""Train the proxy model from scratch on CPU; resumable from its own checkpoints.

    python -m proxy_videoqa.train --work runs/proxy-train --export models/sharp-proxy-qwen25vl

Everything is fixed by the arguments: clip seeds come from the step number, the
learning-rate schedule from the step count, so an interrupted run resumes where its
last checkpoint left off (rerun the same command) and a rerun trains the same model up
to floating-point summation order. The shipped model's three-phase recipe is in
models/sharp-proxy-qwen25vl/README.md.

Losses, all but the first training-only (nothing of them is in the exported model):
- cross-entropy on each answer and the <|im_end|> after it;
- per-token colour and shape heads on the merged video tokens (`AuxHeads`). Without
  these dense targets the answer gradient has to find a one-token needle through
  attention that starts out uniform; a feasibility run stayed at chance for 20 minutes;
- optionally (`--last-layer-attention`), -log of the LAST decoder layer's attention from
  each answer row to the object its question names. Without it the model never bound
  the shape word to the shape's token: it learnt per-split shortcuts instead (the first,
  smallest or only non-repeated object) and stayed at chance where none applies. Only
  the last layer is supervised, never the shallow layers the pruning methods read, so
  it does not hand them their answer;
- optionally (`--asked-shape-probe`), a linear probe that must read the asked shape from
  each answer row's hidden state after two layers, so that the row carries the shape
  before the last layer has to match it (text rows only; no video token is involved).
The shipped model (version 2) used both in its last phases; only the answer loss and the
per-token heads before them (models/sharp-proxy-qwen25vl/README.md has the recipe).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .batches import Batch, collate
from .checkpoint import ModelSize, build_model, qwen25vl_config, save_checkpoint
from .clips import ANSWERS, COLOUR_NAMES, SHAPES, SPLITS, Clip, cell_labels, make_clip
from .geometry import FRAME_PIXELS
from .held_out import held_out_clips
from .tokenizer import build_tokenizer

VERSION = "2"
SIZE = ModelSize(
    text_hidden=192, text_layers=4, text_heads=4, text_kv_heads=2, text_ffn=384,
    vision_depth=4, vision_hidden=64, vision_heads=4, vision_ffn=128,
)  # fmt: skip
SHARP_ARCHITECTURE = "SharpQwen2_5_VLForConditionalGeneration"
SINGLE_TASK_SHARE = 0.2  # the rest is the query task; splits are uniform


def proxy_tokenizer():
    corpus = ["You are a helpful assistant. system user assistant video"] * 50
    corpus += ["What colour is the shape?"] * 50
    corpus += [f"What colour is the {shape}?" for shape in SHAPES] * 50
    corpus += [" ".join(ANSWERS), "\n".join(ANSWERS)] * 50
    return build_tokenizer(corpus, single_tokens=ANSWERS)


def training_clips(step: int, batch_size: int, query_splits: tuple[str, ...] = SPLITS) -> list[Clip]:
    clips = []
    for seed in range(step * batch_size, (step + 1) * batch_size):
        rng = np.random.default_rng([seed, 7])
        if rng.random() < SINGLE_TASK_SHARE:
            clips.append(make_clip(seed, "single", SPLITS[rng.integers(len(SPLITS))]))
        else:
            clips.append(make_clip(seed, "query", query_splits[rng.integers(len(query_splits))]))
    return clips


def learning_rate(step: int, total: int, peak: float, warmup: int = 100) -> float:
    cosine = 0.5 * (1 + math.cos(math.pi * min(step / total, 1.0)))
    return peak * min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * cosine)


class AuxHeads(torch.nn.Module):
    """Training-only per-video-token colour and shape classifiers (0 = background)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.colour = torch.nn.Linear(hidden, 1 + len(COLOUR_NAMES))
        self.shape = torch.nn.Linear(hidden, 1 + len(SHAPES))
        # Which shape the question asks about (last class: "the shape", any), read from the
        # answer row's hidden state after the first two layers (`--asked-shape-probe`).
        self.asked_shape = torch.nn.Linear(hidden, len(SHAPES) + 1)

    def loss(self, video_features: torch.Tensor, clips: list[Clip]) -> torch.Tensor:
        labels = [cell_labels(clip) for clip in clips]
        colour = torch.from_numpy(np.concatenate([c for c, _ in labels]))
        shape = torch.from_numpy(np.concatenate([s for _, s in labels]))
        return F.cross_entropy(self.colour(video_features), colour) + F.cross_entropy(
            self.shape(video_features), shape
        )


def attention_to_asked_objects(attention: torch.Tensor, batch, clips: list[Clip], follow_ups: bool):
    """-log of the last layer's attention (mean over heads) from each answer-predicting row
    to the tokens of the object its question asks about. # scalar"""
    losses = []
    video_starts = (batch.inputs["input_ids"] == batch.video_token_id).int().argmax(1)
    for i, clip in enumerate(clips):
        asked = clip.question_tokens() if follow_ups else [clip.needle_tokens]
        rows = batch.target_positions[i, 0::2][: len(asked)]  # the rows that predict answers
        for row, tokens in zip(rows.tolist(), asked, strict=True):
            columns = torch.tensor(tokens) + video_starts[i]
            losses.append(-torch.log(attention[i, :, row, columns].sum(-1).mean() + 1e-6))
    return torch.stack(losses).mean()


def asked_shapes(clip: Clip, follow_ups: bool) -> list[int]:
    """The shape each answer row's question names (len(SHAPES) for "the shape": any)."""
    questions = [q for q, _ in clip.questions()] if follow_ups else [clip.question]
    named = [[k for k, shape in enumerate(SHAPES) if q.endswith(f" {shape}?")] for q in questions]
    return [n[0] if n else len(SHAPES) for n in named]


def asked_shape_loss(heads: AuxHeads, hidden: torch.Tensor, batch, clips: list[Clip], follow_ups: bool):
    """Cross-entropy of the asked-shape probe on each answer row. # scalar"""
    rows, labels = [], []
    for i, clip in enumerate(clips):
        shapes = asked_shapes(clip, follow_ups)
        rows += [hidden[i, row] for row in batch.target_positions[i, 0::2][: len(shapes)].tolist()]
        labels += shapes
    return F.cross_entropy(heads.asked_shape(torch.stack(rows)), torch.tensor(labels))


def answer_loss_and_aux(
    model,
    heads: AuxHeads,
    clips: list[Clip],
    tokenizer,
    follow_ups: bool,
    attention_weight=0.0,
    probe_weight=0.0,
):
    batch = collate(clips, tokenizer, follow_ups=follow_ups)
    inputs = batch.inputs
    inner = model.model
    video_features = torch.cat(
        inner.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"]).pooler_output
    )
    embeds = inner.get_input_embeddings()(inputs["input_ids"])
    video_mask = (inputs["input_ids"] == model.config.video_token_id).unsqueeze(-1)
    embeds = embeds.masked_scatter(video_mask, video_features)
    out = inner.language_model(
        inputs_embeds=embeds,
        attention_mask=inputs["attention_mask"],
        position_ids=inputs["position_ids"],
        output_attentions=attention_weight > 0,
        output_hidden_states=probe_weight > 0,
    )
    hidden = out.last_hidden_state
    at = batch.target_positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
    logits = model.lm_head(hidden.gather(1, at))  # [B, M, V]: each answer and its <|im_end|>
    answer_loss = F.cross_entropy(logits.flatten(0, 1), batch.target_ids.flatten(), ignore_index=-100)
    aux_loss = heads.loss(video_features, clips)
    if attention_weight > 0:
        aux_loss = aux_loss + attention_weight * attention_to_asked_objects(
            out.attentions[-1], batch, clips, follow_ups
        )
    if probe_weight > 0:
        aux_loss = aux_loss + probe_weight * asked_shape_loss(
            heads, out.hidden_states[2], batch, clips, follow_ups
        )
    return answer_loss, aux_loss


def answer_logits(model, batch: Batch) -> torch.Tensor:
    """Next-token logits where the answer comes, with the training positions. # [B, V]"""
    hidden = model.model(**batch.inputs).last_hidden_state
    at = (batch.prompt_lengths - 1).view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])
    return model.lm_head(hidden.gather(1, at).squeeze(1))


@torch.no_grad()
def held_out_accuracy(model, tokenizer, clips: list[Clip], batch_size: int = 32) -> dict[str, float]:
    """Greedy answer-token accuracy per task, per task/split, and overall (HF forward)."""
    model.eval()
    hits: dict[str, list[bool]] = {}
    for i in range(0, len(clips), batch_size):
        chunk = clips[i : i + batch_size]
        batch = collate(chunk, tokenizer)
        predicted = answer_logits(model, batch).argmax(-1)
        for clip, ok in zip(chunk, (predicted == batch.answer_ids).tolist(), strict=True):
            for key in (clip.task, f"{clip.task}/{clip.split}", "all"):
                hits.setdefault(key, []).append(ok)
    model.train()
    return {key: round(float(np.mean(v)), 4) for key, v in sorted(hits.items())}


def adamw(decay: list, no_decay: list, lr: float) -> torch.optim.AdamW:
    """Every phase's optimizer: weight decay 0.05 on matrices, none on the rest."""
    groups = [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98))


def json_log(path: Path):
    """A function that prints a record and appends it to the JSON-lines log at `path`."""
    log = path.open("a")

    def emit(record: dict) -> None:
        line = json.dumps(record)
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()

    return emit


def _save_state(path: Path, **state) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a kill mid-save keeps the previous checkpoint


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="directory for the resumable state and log")
    parser.add_argument("--export", help="directory the finished model is exported to")
    parser.add_argument("--steps", type=int, default=9000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--aux-weight", type=float, default=1.0)
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--eval-per-split", type=int, default=25, help="held-out clips per task and split")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stop-at", type=int, help="stop after this step (the schedule still spans --steps)")
    parser.add_argument("--init-from", help="start from this state.pt's weights (new optimizer and schedule)")
    parser.add_argument(
        "--query-splits",
        nargs="+",
        default=list(SPLITS),
        choices=SPLITS,
        help="splits the query task trains on",
    )
    parser.add_argument("--follow-ups", action="store_true", help="ask every object's colour as extra turns")
    parser.add_argument(
        "--last-layer-attention", type=float, default=0.0,
        help="weight of a loss on the LAST decoder layer's attention from answer rows to the asked object",
    )  # fmt: skip
    parser.add_argument(
        "--asked-shape-probe", type=float, default=0.0,
        help="weight of a probe making the answer row name the asked shape after two layers",
    )  # fmt: skip
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = proxy_tokenizer()
    model = build_model(qwen25vl_config(tokenizer, SIZE))
    # Eager attention when the last layer's attention weights are part of the loss.
    model.set_attn_implementation("eager" if args.last_layer_attention > 0 else "sdpa")
    heads = AuxHeads(SIZE.text_hidden)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    optimizer = adamw(decay, no_decay + list(heads.parameters()), args.lr)
    state_path = work / "state.pt"
    step, wall = 0, 0.0
    if state_path.exists():
        state = torch.load(state_path, weights_only=True)
        model.load_state_dict(state["model"])
        heads.load_state_dict(state["heads"], strict=False)  # heads added later start fresh
        optimizer.load_state_dict(state["optimizer"])
        step, wall = state["step"], state["wall"]
    elif args.init_from:
        state = torch.load(args.init_from, weights_only=True)
        model.load_state_dict(state["model"])
        heads.load_state_dict(state["heads"], strict=False)  # heads added later start fresh
    held_out = list(held_out_clips(args.eval_per_split))
    emit = json_log(work / "log.jsonl")

    n_params = sum(p.numel() for p in model.parameters())
    emit({"event": "start", "step": step, "params_M": round(n_params / 1e6, 3), "args": vars(args)})
    started, losses = time.time() - wall, []
    last_step = min(args.steps, args.stop_at or args.steps)
    while step < last_step:
        lr = learning_rate(step, args.steps, args.lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        clips = training_clips(step, args.batch, tuple(args.query_splits))
        answer_loss, aux_loss = answer_loss_and_aux(
            model, heads, clips, tokenizer, args.follow_ups, args.last_layer_attention, args.asked_shape_probe
        )
        optimizer.zero_grad(set_to_none=True)
        (answer_loss + args.aux_weight * aux_loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        losses.append((answer_loss.item(), aux_loss.item()))
        if step % 20 == 0 or step == last_step:
            recent = np.mean(losses[-20:], axis=0)
            emit({"step": step, "wall_s": round(time.time() - started), "loss": round(float(recent[0]), 4),
                  "aux": round(float(recent[1]), 4), "lr": round(lr, 6)})  # fmt: skip
        if step % args.eval_every == 0 or step == last_step:
            emit({"event": "eval", "step": step, **held_out_accuracy(model, tokenizer, held_out)})
        if step % args.checkpoint_every == 0 or step == last_step:
            _save_state(
                state_path, model=model.state_dict(), heads=heads.state_dict(),
                optimizer=optimizer.state_dict(), step=step, wall=time.time() - started,
            )  # fmt: skip
    if args.export:
        export(model, tokenizer, Path(args.export), args, wall_s=time.time() - started)
        emit({"event": "exported", "to": args.export})


def export(
    model, tokenizer, out: Path, args: argparse.Namespace, wall_s: float,
    module: str = "proxy_videoqa.train", version: str = VERSION,
) -> None:  # fmt: skip
    """The model as vLLM loads it, and `training.json`: the phase's version and its exact
    command (`python -m {module}` with every argument it ran with)."""
    save_checkpoint(
        model, tokenizer, out, min_pixels=FRAME_PIXELS // 4, max_pixels=FRAME_PIXELS,
        architecture=SHARP_ARCHITECTURE,
    )  # fmt: skip
    options = []
    for key, value in vars(args).items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            options.append(flag)
        elif isinstance(value, list):
            options.append(f"{flag} {' '.join(value)}")
        elif value not in (None, False):
            options.append(f"{flag} {value}")
    command = f"python -m {module} " + " ".join(options)
    training = {"version": version, "command": command, "steps": args.steps, "wall_s": round(wall_s)}
    (out / "training.json").write_text(json.dumps(training, indent=2) + "\n")


if __name__ == "__main__":
    main()
