"""The long-video phase: fine-tune the proxy's language model to answer from kept tokens
spread over up to 64 clips; resumable from its own checkpoints.

    python -m proxy_videoqa.train_long --work runs/proxy-long \
        --init-from models/sharp-proxy-qwen25vl --export models/sharp-proxy-qwen25vl-long

The tower is frozen and its features cached (proxy_videoqa/long_videos.py says why), so a
step costs only the language model on sequences of at most ~1k tokens. Each step draws one
video length, then a batch of videos of that length, each with a question (`colour`,
`first` or `count`) and a kept subset: the whole video when it is short, otherwise a share
of 5-15% (5-30% up to 4 clips) holding every token the answer depends on, filled
uniformly, at random, or with other objects first (what an attention-based selection
keeps). A fifth of the steps are the short clips' own questions, at one clip and all
splits, so that the shipped short cells keep their accuracy.

Losses: cross-entropy on the answer and the <|im_end|> after it, and (`--last-layer-attention`)
-log of the LAST layer's attention from the answer row to the tokens the answer depends
on, as in the shipped model's last phases. The shallow layers the selections read are
never supervised.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Qwen2_5_VLForConditionalGeneration

from .batches import chat_prompt
from .geometry import VIDEO_TOKENS
from .long_videos import (
    FILLS,
    KINDS,
    LENGTHS,
    FeaturePool,
    LongExample,
    compose,
    keep_tokens,
    video_positions,
)
from .tokenizer import VIDEO_PAD
from .train import _save_state, adamw, export, json_log, learning_rate, proxy_tokenizer

VERSION = "3-long"
TRAIN_POOL_SEED = 300_000_000  # beyond the short phases' seeds, below the held-out ones
EVAL_POOL_SEED = 1_500_000_000  # beyond HELD_OUT_SEED's range, below the bench's haystack
SHORT_TASK_SHARE = 0.2
LENGTH_WEIGHTS = (3, 2, 3, 2, 3, 2, 3)  # over LENGTHS
TOKENS_PER_BATCH = 6144


@dataclass
class LongBatch:
    inputs_embeds: torch.Tensor  # [B, L, D]
    attention_mask: torch.Tensor  # [B, L]
    position_ids: torch.Tensor  # [3, B, L]
    answer_rows: torch.Tensor  # [B]: the row that predicts the answer (the next one predicts <|im_end|>)
    answer_ids: torch.Tensor  # [B]
    end_id: int
    asked_columns: list[torch.Tensor]  # per example: the rows of the tokens the answer depends on


def sequence(tokenizer, example: LongExample) -> tuple[list[int], int, list[int]]:
    """(ids before the video, number of video rows, ids after it up to the answer)."""
    before, after = chat_prompt(tokenizer, example.question).split(VIDEO_PAD)
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    return encode(before), len(example.kept), encode(after)


def collate_long(examples: list[LongExample], pool: FeaturePool, tokenizer, embed) -> LongBatch:
    """Right-padded batch: prompt, the answer and <|im_end|>; video rows carry the pool's
    features of the kept tokens at their whole-video positions, the text after the video
    continues at the whole grid's max + 1, as vLLM places it (sharp_plugin/vllm/positions.py)."""
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    parts = [sequence(tokenizer, e) for e in examples]
    answers = [tokenizer.encode(e.answer, add_special_tokens=False)[0] for e in examples]
    length = max(len(b) + n + len(a) + 2 for b, n, a in parts)
    width = pool.features.shape[-1]
    embeds = torch.zeros(len(examples), length, width)
    mask = torch.zeros(len(examples), length, dtype=torch.long)
    positions = torch.zeros(3, len(examples), length, dtype=torch.long)
    rows, columns = [], []
    for i, (example, (before, n, after), answer) in enumerate(zip(examples, parts, answers, strict=True)):
        ids = torch.tensor(before + [0] * n + after + [answer, end_id])
        embeds[i, : len(ids)] = embed(ids)
        kept = torch.from_numpy(example.kept)
        clip_of, token_of = kept // VIDEO_TOKENS, kept % VIDEO_TOKENS
        pool_rows = torch.tensor(example.clips)[clip_of]
        embeds[i, len(before) : len(before) + n] = pool.features[pool_rows, token_of]
        mask[i, : len(ids)] = 1
        grid = video_positions(example.num_clips)
        start = len(before)
        text_after = start + int(grid.max()) + 1
        positions[:, i, : len(before)] = torch.arange(len(before))
        positions[:, i, start : start + n] = grid[:, kept] + start
        positions[:, i, start + n : len(ids)] = torch.arange(len(after) + 2) + text_after
        rows.append(start + n + len(after) - 1)
        where = torch.searchsorted(kept, torch.tensor(example.asked_tokens))
        columns.append(where + start)
    return LongBatch(embeds, mask, positions, torch.tensor(rows), torch.tensor(answers), end_id, columns)


def forward(model: Qwen2_5_VLForConditionalGeneration, batch: LongBatch, attentions: bool = False):
    out = model.model.language_model(
        inputs_embeds=batch.inputs_embeds,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        output_attentions=attentions,
    )
    index = torch.stack([batch.answer_rows, batch.answer_rows + 1], 1)  # [B, 2]
    hidden = out.last_hidden_state.gather(
        1, index.unsqueeze(-1).expand(-1, -1, out.last_hidden_state.shape[-1])
    )
    return model.lm_head(hidden), out  # [B, 2, V]


def losses(model, batch: LongBatch, attention_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    logits, out = forward(model, batch, attentions=attention_weight > 0)
    targets = torch.stack([batch.answer_ids, torch.full_like(batch.answer_ids, batch.end_id)], 1)
    answer = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    if attention_weight == 0:
        return answer, torch.zeros(())
    last = out.attentions[-1]  # [B, heads, L, L]
    terms = [
        -torch.log(last[i, :, row, cols].sum(-1).mean() + 1e-6)
        for i, (row, cols) in enumerate(zip(batch.answer_rows.tolist(), batch.asked_columns, strict=True))
    ]
    return answer, torch.stack(terms).mean()


def draw_step(pool: FeaturePool, step: int, seed: int = 0) -> list[LongExample]:
    """The batch of a training step, from the step number alone (reruns are identical)."""
    rng = np.random.default_rng([seed, step, 13])
    if rng.random() < SHORT_TASK_SHARE:
        return [own_question(pool, rng) for _ in range(16)]
    weights = np.array(LENGTH_WEIGHTS, dtype=float)
    num_clips = int(rng.choice(LENGTHS, p=weights / weights.sum()))
    examples = []
    while True:
        if num_clips <= 4 and rng.random() < 0.5:
            keep = 1.0
        else:
            keep = float(rng.uniform(0.05, 0.3 if num_clips <= 4 else 0.15))
        kind = KINDS[int(rng.choice(3, p=[0.5, 0.25, 0.25]))]
        fill = FILLS[rng.integers(len(FILLS))]
        examples.append(compose(pool, rng, num_clips, kind, keep, fill))
        longest = max(len(e.kept) for e in examples) + 40
        if len(examples) >= 4 and (len(examples) + 1) * longest > TOKENS_PER_BATCH or len(examples) == 16:
            return examples


def own_question(pool: FeaturePool, rng: np.random.Generator, keep: float | None = None) -> LongExample:
    """A short clip with its own question (any task and split), whole or reduced."""
    index = int(rng.integers(len(pool.clips)))
    clip = pool.clips[index]
    if keep is None:
        keep = 1.0 if rng.random() < 0.6 else float(rng.uniform(0.05, 0.3))
    kept = keep_tokens(pool, [index], clip.needle_tokens, VIDEO_TOKENS, keep, "uniform", rng)
    return LongExample((index,), kept, "clip", clip.question, clip.answer, tuple(clip.needle_tokens))


EVAL_CELLS = (  # (name, clips, kind, keep, fill)
    ("unpruned-1", 1, "colour", 1.0, "uniform"),
    ("unpruned-4", 4, "colour", 1.0, "uniform"),
    ("oracle-16", 16, "colour", 0.1, "uniform"),
    ("oracle-64", 64, "colour", 0.1, "uniform"),
    ("first-16", 16, "first", 0.1, "uniform"),
    ("count-16", 16, "count", 0.1, "uniform"),
)


def eval_examples(pool: FeaturePool, per_cell: int) -> dict[str, list[LongExample]]:
    cells = {}
    for name, clips, kind, keep, fill in EVAL_CELLS:
        rng = np.random.default_rng([EVAL_POOL_SEED, clips, KINDS.index(kind)])
        cells[name] = [compose(pool, rng, clips, kind, keep, fill) for _ in range(per_cell)]
    rng = np.random.default_rng([EVAL_POOL_SEED, 99])
    cells["short-clips"] = [own_question(pool, rng, keep=1.0) for _ in range(per_cell)]
    return cells


@torch.no_grad()
def accuracy(model, pool: FeaturePool, tokenizer, cells: dict[str, list[LongExample]]) -> dict[str, float]:
    model.eval()
    embed = model.model.get_input_embeddings()
    result = {}
    for name, examples in cells.items():
        hits = []
        for start in range(0, len(examples), 8):
            batch = collate_long(examples[start : start + 8], pool, tokenizer, embed)
            logits, _ = forward(model, batch)
            hits += (logits[:, 0].argmax(-1) == batch.answer_ids).tolist()
        result[name] = round(float(np.mean(hits)), 4)
    model.train()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--work", required=True, help="directory for the resumable state, the cache and the log"
    )
    parser.add_argument("--init-from", required=True, help="the shipped model's directory (tower and LM)")
    parser.add_argument("--export", help="directory the finished model is exported to")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--stop-at", type=int, help="stop after this step (the schedule still spans --steps)")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--pool", type=int, default=4000, help="training clips whose features are cached")
    parser.add_argument(
        "--eval-pool", type=int, default=1000, help="held-out clips the eval videos draw from"
    )
    parser.add_argument("--last-layer-attention", type=float, default=1.0)
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--eval-per-cell", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = proxy_tokenizer()
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(args.init_from, torch_dtype=torch.float32)
    model.set_attn_implementation("eager" if args.last_layer_attention > 0 else "sdpa")
    model.model.visual.requires_grad_(False)
    pools = {}
    for name, seed, size in (("train", TRAIN_POOL_SEED, args.pool), ("eval", EVAL_POOL_SEED, args.eval_pool)):
        cache = work / f"features-{name}-{seed}-{size}.pt"
        pools[name] = FeaturePool.build(seed, size)
        if cache.exists():
            pools[name].features = torch.load(cache, weights_only=True)
        else:
            pools[name].encode(model)
            torch.save(pools[name].features, cache)
    trained = [p for n, p in model.named_parameters() if not n.startswith("model.visual")]
    optimizer = adamw([p for p in trained if p.ndim >= 2], [p for p in trained if p.ndim < 2], args.lr)
    state_path = work / "state.pt"
    step, wall = 0, 0.0
    if state_path.exists():
        state = torch.load(state_path, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, wall = state["step"], state["wall"]
    held_out = eval_examples(pools["eval"], args.eval_per_cell)
    emit = json_log(work / "log.jsonl")

    emit({"event": "start", "step": step, "args": vars(args)})
    if step == 0:
        emit({"event": "eval", "step": 0, **accuracy(model, pools["eval"], tokenizer, held_out)})
    started, history = time.time() - wall, []
    embed = model.model.get_input_embeddings()
    last_step = min(args.steps, args.stop_at or args.steps)
    while step < last_step:
        lr = learning_rate(step, args.steps, args.lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        examples = draw_step(pools["train"], step)
        batch = collate_long(examples, pools["train"], tokenizer, embed)
        answer_loss, attention_loss = losses(model, batch, args.last_layer_attention)
        optimizer.zero_grad(set_to_none=True)
        (answer_loss + args.last_layer_attention * attention_loss).backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        step += 1
        history.append((answer_loss.item(), attention_loss.item()))
        if step % 20 == 0 or step == last_step:
            recent = np.mean(history[-20:], axis=0)
            emit({"step": step, "wall_s": round(time.time() - started), "loss": round(float(recent[0]), 4),
                  "attention": round(float(recent[1]), 4), "lr": round(lr, 6)})  # fmt: skip
        if step % args.eval_every == 0 or step == last_step:
            emit({"event": "eval", "step": step, **accuracy(model, pools["eval"], tokenizer, held_out)})
        if step % args.checkpoint_every == 0 or step == last_step:
            _save_state(state_path, model=model.state_dict(), optimizer=optimizer.state_dict(), step=step,
                        wall=time.time() - started)  # fmt: skip
    if args.export:
        wall_s = time.time() - started
        export(model, tokenizer, Path(args.export), args, wall_s, "proxy_videoqa.train_long", VERSION)
        emit({"event": "exported", "to": args.export})


if __name__ == "__main__":
    main()
