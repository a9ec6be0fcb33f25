"""Training batches: the prompt is the chat template's, and every answer is supervised."""

from proxy_videoqa.batches import chat_prompt, collate
from proxy_videoqa.clips import make_clip
from proxy_videoqa.geometry import VIDEO_TOKENS
from proxy_videoqa.tokenizer import VIDEO_PAD
from proxy_videoqa.train import proxy_tokenizer


def test_follow_ups_ask_every_object_and_supervise_each_answer():
    tokenizer = proxy_tokenizer()
    clips = [make_clip(seed, "query", "standard") for seed in range(4)] + [make_clip(0, "single", "small")]
    batch = collate(clips, tokenizer, follow_ups=True)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for i, clip in enumerate(clips):
        pairs = clip.questions()
        assert pairs[0] == (clip.question, clip.answer)
        assert len(pairs) == (
            1 if clip.task == "single" else len({(o.shape, o.colour) for o in clip.objects})
        )
        ids = batch.inputs["input_ids"][i].tolist()
        assert ids.count(tokenizer.convert_tokens_to_ids(VIDEO_PAD)) == VIDEO_TOKENS
        supervised = [(p, t) for p, t in zip(batch.target_positions[i].tolist(), batch.target_ids[i].tolist(),
                                             strict=True) if t != -100]  # fmt: skip
        # Each target is the next token of the sequence: answers and their <|im_end|>.
        assert all(ids[p + 1] == t for p, t in supervised)
        answers = [tokenizer.decode(t) for _, t in supervised[0::2]]
        assert answers == [a for _, a in pairs] and all(t == end for _, t in supervised[1::2])
        # The first turn is exactly what serving sends.
        prompt = tokenizer.decode(ids[: batch.prompt_lengths[i]])
        assert prompt == chat_prompt(tokenizer, clip.question).replace(VIDEO_PAD, VIDEO_PAD * VIDEO_TOKENS)
        assert batch.answer_ids[i] == supervised[0][1]


def test_without_follow_ups_only_the_clips_question_is_asked():
    tokenizer = proxy_tokenizer()
    batch = collate([make_clip(1, "query", "early")], tokenizer)
    assert (batch.target_ids != -100).sum() == 2
