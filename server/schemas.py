"""Request and response models: OpenAI's shapes plus the `sharp` object and report."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Lenient(BaseModel):
    # OpenAI clients send fields we do not use (user, logprobs=False, ...): ignore them.
    model_config = ConfigDict(extra="ignore")


class URLRef(_Lenient):
    url: str


class FileRef(_Lenient):
    file_id: str


class ContentPart(_Lenient):
    type: Literal["text", "video_url", "image_url", "file"]
    text: str | None = None
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
    content: str | list[ContentPart] | None = None


class StreamOptions(_Lenient):
    include_usage: bool = False


class VideoIOKwargs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_frames: int | None = Field(None, ge=1)
    fps: float | None = Field(None, gt=0)


class MediaIOKwargs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    video: VideoIOKwargs | None = None


class ChatCompletionRequest(_Lenient):
    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=8)
    ignore_eos: bool = False  # vLLM's extension (load tests, benchmarks)
    # ShaRP settings: the body field, or vLLM's spelling mm_processor_kwargs.sharp.
    sharp: dict[str, Any] | None = None
    mm_processor_kwargs: dict[str, Any] | None = None
    media_io_kwargs: MediaIOKwargs | None = None

    @property
    def output_budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class SharpVideoReport(BaseModel):
    method: str
    retention: float
    prune_layer: int | None
    video_tokens: int | None
    video_tokens_kept: int | None
    scoring_ms: float | None
    frames: int


class SharpReport(BaseModel):
    """Per request: totals over its videos, and one entry per video."""

    method: str
    retention: float
    prune_layer: int | None
    video_tokens: int
    video_tokens_kept: int
    scoring_ms: float
    frames: int
    videos: list[SharpVideoReport]
