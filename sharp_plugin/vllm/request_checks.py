"""What the processor refuses, before any tower runs: everything a request controls is
checked here, in the frontend, because an exception inside the worker would take the
engine down with every request in flight. Each refusal is a SharpSettingsError naming
the field, which the server turns into a 400."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sharp_plugin.core import SharpSettings, SharpSettingsError
from sharp_plugin.core.budget import fitting_retention
from sharp_plugin.core.settings import MAX_VIDEO_TOKENS


def check_questions(settings: SharpSettings, items: Sequence[dict[str, Any]]) -> None:
    """A scoring method needs user text around every video (query_rows.split_prompt)."""
    if not settings.needs_scoring_pass:
        return
    if any(not item["has_question"] for item in items):
        raise SharpSettingsError(
            f"sharp.method: {settings.method!r} scores a video by the user's text after it "
            "(or before it, when there is none after), and this prompt has no user text "
            "around a video",
            field="method",
        )


def check_video(num_tokens: int, settings: SharpSettings, reserved_tokens: int, profiling: bool) -> None:
    """One processed video of `num_tokens` visual tokens. `reserved_tokens`: the longest
    video this engine's memory profile held (`sharp_max_video_tokens`; 0: no limit)."""
    if num_tokens > MAX_VIDEO_TOKENS:
        raise SharpSettingsError(
            f"sharp: the video has {num_tokens} visual tokens, more than the {MAX_VIDEO_TOKENS} "
            "this server selects from; send fewer frames or a lower resolution",
            field=None,
        )
    if reserved_tokens and num_tokens > reserved_tokens and not profiling:
        raise SharpSettingsError(
            f"sharp: the video has {num_tokens} unpruned visual tokens, more than the "
            f"{reserved_tokens} this engine reserved memory for (sharp_max_video_tokens); send "
            "fewer frames or a lower resolution",
            field=None,
        )
    if any(i >= num_tokens for i in settings.oracle_tokens):
        raise SharpSettingsError(
            f"sharp.oracle_tokens: indices must be below the video's {num_tokens} tokens",
            field="oracle_tokens",
        )


def check_pruned_prompt_fits(length: int, max_len: int, video_tokens: list[int], kept: int) -> None:
    """A prompt over the context is refused by vLLM after the processor, with a message
    that says nothing about pruning. Only the kept tokens count against the context (the
    unpruned ones pass through the tower and the scoring pass, never the KV cache), so
    say which retention would fit. `length`: the pruned prompt; `video_tokens`: each
    video's N; `kept`: the videos' kept tokens in all."""
    if length <= max_len:
        return
    other = length - kept
    fits = fitting_retention(other, video_tokens, max_len - 1)  # room for one generated token
    said = (
        f"sharp.retention: the prompt is {length} tokens, over max_model_len {max_len}: "
        f"{kept} of its videos' {sum(video_tokens)} visual tokens kept, and {other} other tokens"
    )
    if fits is None:
        raise SharpSettingsError(f"{said}; no retention fits (one token per video would not)", "retention")
    raise SharpSettingsError(f"{said}; retention {fits} or lower fits", "retention")
