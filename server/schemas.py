"""Request and response models: OpenAI's shapes plus the `sharp` object and report."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from sharp_plugin.core import SharpSettings
from sharp_plugin.report import KeptTokens, VideoReport

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
MAX_OUTPUT_TOKENS = (1 << 31) - 1
MAX_STOP_STRINGS = 16


def _valid_utf8(text: str) -> str:
    """JSON can carry lone UTF-16 surrogates ("\\ud800"), which no tokenizer can encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (it holds a lone surrogate)") from None
    return text


Text = Annotated[str, AfterValidator(_valid_utf8)]

# A server option inside the `sharp` object: add each video's selection to its report.
RETURN_SELECTION = "return_selection"


def _sharp_object_schema() -> dict[str, Any]:
    schema = SharpSettings.model_json_schema()
    schema["properties"][RETURN_SELECTION] = {
        "type": "boolean",
        "default": False,
        "description": "Add each video's token grid, kept indices and frame timestamps to its report "
        "(sharp-serve only; the lists are long, so off by default).",
    }
    return {**schema, "title": "SharpSettings"}


# The `sharp` object is validated by the plugin's schema (merged with the server's
# defaults first, so partial objects are fine); the spec shows that schema.
SharpObject = Annotated[dict[str, Any], WithJsonSchema(_sharp_object_schema())]


class _Lenient(BaseModel):
    # OpenAI clients send fields we do not use (user, logprobs=False, ...): ignore them.
    model_config = ConfigDict(extra="ignore")


class URLRef(_Lenient):
    url: Text


class FileRef(_Lenient):
    file_id: str


class ContentPart(_Lenient):
    type: Literal["text", "video_url", "image_url", "file"]
    text: Text | None = None
    video_url: URLRef | None = None
    image_url: URLRef | None = None
    file: FileRef | None = None

    @model_validator(mode="after")
    def _payload_matches_type(self) -> ContentPart:
        if getattr(self, self.type) is None:
            raise ValueError(f"a {self.type!r} content part needs its {self.type!r} field")
        return self


class Message(_Lenient):
    role: Literal["system", "user", "assistant", "developer"]
    content: Text | list[ContentPart] | None = None


class StreamOptions(_Lenient):
    include_usage: bool = False


class VideoIOKwargs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_frames: int | None = Field(None, ge=1, le=1 << 16)
    fps: float | None = Field(None, gt=0, le=1000, allow_inf_nan=False)
    # `keyframes`: each sampled frame moved to its nearest keyframe (up to half a GOP
    # away) for much cheaper decoding of long clips; `uniform` is the model's own.
    sampling: Literal["uniform", "keyframes"] = "uniform"


class MediaIOKwargs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    video: VideoIOKwargs | None = None


class ChatCompletionRequest(_Lenient):
    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1, le=MAX_OUTPUT_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_OUTPUT_TOKENS)
    temperature: float = Field(1.0, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    seed: int | None = Field(None, ge=INT64_MIN, le=INT64_MAX)
    stop: Text | Annotated[list[Text], Field(max_length=MAX_STOP_STRINGS)] | None = None
    n: int = Field(1, ge=1, le=8)
    ignore_eos: bool = False  # vLLM's extension (load tests, benchmarks)
    # ShaRP settings: the body field, or vLLM's spelling mm_processor_kwargs.sharp.
    sharp: SharpObject | None = None
    mm_processor_kwargs: dict[str, Any] | None = None
    media_io_kwargs: MediaIOKwargs | None = None

    @property
    def output_budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class SharpSelection(KeptTokens):
    """Which of a video's tokens the prompt kept (with `sharp.return_selection`), and where
    they are in the video. Group g covers sampled frames [g * frames_per_group,
    (g + 1) * frames_per_group) (Qwen-VL: 2 frames per group), and a token covers the same
    fraction of each of those frames (1/rows by 1/columns)."""

    frames_per_group: int
    # Each sampled frame's time in the source video, in seconds.
    frame_timestamps: list[float]


class SharpVideoReport(VideoReport):
    """One video's report: the worker's (sharp_plugin.report.VideoReport), and what the
    server adds. `selection` is there only with `sharp.return_selection` (the lists are
    long). For a selection served by vLLM's encoder cache (`cached`), the fields that
    describe a selection run (tower_ms, prior, vision_cached, context_missing, scored_with)
    are None and scoring_ms is 0: nothing ran for this request."""

    frames: int  # sampled frames decoded for the video
    # The selection came from the encoder cache (an identical earlier request).
    cached: bool = False
    selection: SharpSelection | None = None


class SharpReport(BaseModel):
    """Per request: totals over its videos, and one entry per video."""

    method: str
    retention: float | None  # the first video's (`auto` chooses one per video)
    prune_layer: int | None
    video_tokens: int
    video_tokens_kept: int
    scoring_ms: float
    tower_ms: float  # summed over the videos (0 for those served from a cache)
    groups_skipped: int  # static temporal groups the tower did not embed, over the videos
    frames: int
    videos: list[SharpVideoReport]
