"""The query rule (docs/method.md, "Query rows"): which prompt text scores a video.

The query is the user's text after the video, in the same turn; when there is none, the
user's text before it in that turn, repeated right after the video (the scoring pass is
our own, so the question can stand after the video there while the real prompt keeps it
before). Query rows never consist of chat-template tokens alone: a prompt with no user
text around the video has no question. Each earlier media item stays in the scoring
prefix as one slot token (its placeholder id), which the worker fills with that item's
embeddings (docs/method.md, "Earlier media")."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PromptTokens:
    """The token ids the rule reads, and the tokenizer's decode."""

    video: int
    image: int
    vision_start: int | None  # the token that opens a media item (Qwen's), or None
    vision_end: int | None
    turn_start: int | None  # `<|im_start|>` in the Qwen-style templates every family uses
    turn_end: int | None  # `<|im_end|>`
    decode: Callable[..., str]  # tokenizer.decode(ids, skip_special_tokens=...)

    @property
    def media(self) -> set[int]:
        return {self.video, self.image}


def media_as_slots(tokens: Sequence[int], media: set[int], expanded: bool = True) -> list[int]:
    """The tokens with each media item as a single slot token: each run of one media
    placeholder collapsed when the prompt's placeholders are `expanded` (one token per
    embedding), else the tokens as they are (one token per item: LLaVA's template puts
    two videos side by side, `<video><video>`)."""
    if not expanded:
        return list(tokens)
    return [t for i, t in enumerate(tokens) if t not in media or i == 0 or tokens[i - 1] != t]


def split_prompt(prompt: list[int], tokens: PromptTokens, expanded: bool = True) -> list[dict[str, Any]]:
    """Per video placeholder: the scoring pass's prompt before it (earlier media as slot
    tokens), after it (later media dropped), where its query rows start (`query_from`,
    past a vision-end token), and whether it has a question at all."""
    items, index = [], 0
    while index < len(prompt):
        if prompt[index] != tokens.video:
            index += 1
            continue
        stop = index + 1
        while expanded and stop < len(prompt) and prompt[stop] == tokens.video:
            stop += 1  # an already expanded placeholder run is one item
        prefix = media_as_slots(prompt[:index], tokens.media, expanded)
        suffix = [t for t in prompt[stop:] if t not in tokens.media]
        query_from = 1 if suffix and tokens.vision_end is not None and suffix[0] == tokens.vision_end else 0
        asked_after = _is_text(_turn_text_after(suffix[query_from:], tokens), tokens)
        before = _turn_text_before(prefix, tokens)
        asked_before = _is_text(before, tokens)
        if asked_before and not asked_after:
            question = [t for t in before if t not in tokens.media]
            suffix = suffix[:query_from] + question + suffix[query_from:]
        items.append(
            {
                "prefix": prefix,
                "suffix": suffix,
                "query_from": query_from,
                "has_question": asked_after or asked_before,
            }
        )
        index = stop
    return items


def _turn_text_after(after: list[int], tokens: PromptTokens) -> list[int]:
    """The tokens after a video up to the end of its turn (all of them in a prompt
    without turn markers)."""
    return after[: after.index(tokens.turn_end)] if tokens.turn_end in after else after


def _turn_text_before(prefix: list[int], tokens: PromptTokens) -> list[int]:
    """The user's text before a video in its turn: after the turn's role line, up to the
    video's vision-start token. Empty without turn markers (the whole prefix of a raw
    prompt is not known to be the question)."""
    if tokens.turn_start is None or tokens.turn_start not in prefix:
        return []
    opened = len(prefix) - prefix[::-1].index(tokens.turn_start)  # just after the last turn start
    body = prefix[opened:]
    newline = next((i for i, t in enumerate(body) if "\n" in tokens.decode([t])), None)
    body = body[newline + 1 :] if newline is not None else []  # skip the role line
    if body and tokens.vision_start is not None and body[-1] == tokens.vision_start:
        body = body[:-1]
    return body


def _is_text(ids: list[int], tokens: PromptTokens) -> bool:
    text = tokens.decode(ids, skip_special_tokens=True) if ids else ""
    return bool(text.strip())
