"""Server settings: a YAML file (`sharp-serve --config configs/x.yaml`), overridable by
environment variables `SHARP_SERVE_<SECTION>__<FIELD>` (e.g. SHARP_SERVE_SECURITY__API_KEY).
All validation lives here; nothing is created at import time."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from sharp_plugin.core import parse_settings

REPO_ROOT = Path(__file__).resolve().parents[1]

# The video decoder backends (server/media/decoders/) and where they decode.
DecoderName = Literal["decord", "pyav", "torchcodec"]
DecodeDevice = Literal["cpu", "cuda"]
GPU_DECODERS = ("decord", "torchcodec")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EngineSettings(_Section):
    """What vLLM's AsyncLLM is built with: every field but `architecture`,
    `vision_cache_mb` and `extra_engine_args` is the AsyncEngineArgs field of the same name.
    Scaling past one GPU is vLLM's own tensor, pipeline and data parallelism (Ray for
    several hosts)."""

    model: str
    served_model_name: str | None = None
    # The ShaRP class to serve the model with; unset: the one for the architecture in
    # the model's config.json (sharp_plugin.SHARP_FOR_STOCK).
    architecture: str | None = None
    # The worker's vision-tower cache by video content (follow-up questions on a known
    # video skip the tower), per GPU, reserved by vLLM's memory profile; 0 turns it off.
    vision_cache_mb: int = Field(512, ge=0, le=1 << 20)
    dtype: str = "auto"
    max_model_len: int = 8192
    max_num_seqs: int = 16
    enforce_eager: bool = False
    enable_prefix_caching: bool = True
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    data_parallel_size: int = 1
    distributed_executor_backend: str | None = None
    gpu_memory_utilization: float | None = None
    seed: int = 0
    # Any other AsyncEngineArgs field, passed through unchanged.
    extra_engine_args: dict[str, Any] = Field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.served_model_name or self.model


class MediaSettings(_Section):
    """Limits on what a request may ask the server to decode."""

    max_upload_bytes: int = Field(256 * 1024 * 1024, gt=0)
    max_inline_bytes: int = Field(64 * 1024 * 1024, gt=0)  # a data: URL, after base64 decoding
    # A JSON request body (data: URLs arrive base64-encoded inside it: 4/3 of their size).
    max_request_bytes: int = Field(96 * 1024 * 1024, gt=0)
    max_local_file_bytes: int = Field(4 * 1024**3, gt=0)  # a file:// video, checked before decoding
    max_image_pixels: int = Field(4096 * 4096, gt=0)  # width * height, checked before decoding
    max_video_seconds: float = 600.0
    # Unpruned visual tokens per request, estimated after probing and before decoding
    # (ceil(frames / 2) * (w / 28) * (h / 28): the Qwen-VL geometry the decoder sizes
    # frames for). What bounds the vision tower's and the scoring pass's work, whatever
    # the retention; only the kept tokens count against the context. None: no cap.
    max_video_tokens: int | None = Field(None, gt=0)
    max_source_pixels: int = 3840 * 2160  # width * height of the encoded video
    max_frames: int = 64
    default_num_frames: int | None = None
    default_fps: float = 2.0
    # Per-frame pixel budget after resizing: the model's own (e.g. Qwen max_pixels).
    max_frame_pixels: int = 448 * 448
    # Pixel budget of a whole video after resizing, over its sampled frames (what
    # qwen-vl-utils calls VIDEO_TOTAL_PIXELS): a longer video gets smaller frames, so its
    # pixels handed to the engine, its tokens and its tower's work stay under a bound,
    # at the price of detail. None: every frame gets max_frame_pixels.
    max_video_pixels: int | None = Field(None, gt=0)
    max_videos_per_request: int = 4
    max_images_per_request: int = 4
    # Which backend decodes (server/media/decoders/; README, "Decoding"): pyav (the
    # default: decodes forward between sampled frames, exact on every clip measured and
    # as fast or faster in every cell of bench/results/decode.md), decord (decord2 3.4.0, which
    # returns wrong frames on 10-minute clips there) or torchcodec (an optional extra that
    # loads only where CUDA is installed). decode_device cuda: NVDEC, with a CUDA build of
    # decord or with torchcodec; frames come back to the host for the processor.
    decoder: DecoderName = "pyav"
    decode_device: DecodeDevice = "cpu"
    decode_threads: int = 2
    # Readers per video, each on its own thread over its own GOPs (seek-sampling
    # in parallel; bench/decode.py). 1 = one reader.
    decode_readers: int = Field(2, ge=1, le=64)
    fetch_timeout_s: float = 30.0

    @model_validator(mode="after")
    def _frames(self) -> MediaSettings:
        if self.default_num_frames is not None and self.default_num_frames > self.max_frames:
            raise ValueError("default_num_frames must not exceed max_frames")
        if self.decode_device == "cuda" and self.decoder not in GPU_DECODERS:
            raise ValueError(
                f"decoder {self.decoder} decodes on the CPU only; on cuda use one of {GPU_DECODERS}"
            )
        return self


class SecuritySettings(_Section):
    api_key: SecretStr | None = None
    allow_remote_urls: bool = False
    allowed_url_domains: list[str] = Field(default_factory=list)  # empty: any public host
    allow_private_addresses: bool = False  # loopback, private, link-local
    allowed_local_root: Path | None = None  # file:// only below this directory


class FilesSettings(_Section):
    directory: Path = Path("runs/files")
    ttl_s: float = 24 * 3600
    max_files: int = 1000


class HttpSettings(_Section):
    """Bounds on connections, so that slow, idle or numerous clients cannot hold the
    server's sockets and tasks (server/connections.py)."""

    # From a connection's first byte (or its opening) to the end of the request's headers.
    header_timeout_s: float = Field(10.0, gt=0, le=3600)
    # From the end of the headers to the end of the body: an upload of max_upload_bytes
    # must arrive within it (256 MiB in 120 s is about 2 MiB/s).
    body_timeout_s: float = Field(120.0, gt=0, le=24 * 3600)
    # An idle connection between requests is closed after this long.
    keep_alive_timeout_s: float = Field(5.0, gt=0, le=3600)
    # Open connections at once; one more is answered 503 and closed.
    max_connections: int = Field(2048, ge=1, le=1 << 20)


class RecoverySettings(_Section):
    """What the server does when its engine dies (server/supervisor.py)."""

    # `restart`: build a new engine in this process, `max_restarts` times at most within
    # `window_s`, waiting `backoff_s` (doubling) before each; past that, exit non-zero.
    # `exit`: exit non-zero at once, for the supervisor (Docker, Kubernetes) to restart.
    on_engine_death: Literal["restart", "exit"] = "restart"
    max_restarts: int = Field(3, ge=1, le=100)
    window_s: float = Field(600.0, gt=0)
    backoff_s: float = Field(1.0, ge=0, le=600)
    # How often the server checks that its engine is alive.
    check_interval_s: float = Field(0.5, gt=0, le=60)


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHARP_SERVE_", env_nested_delimiter="__", extra="forbid")

    host: str = "127.0.0.1"
    port: int = 8000
    request_timeout_s: float = Field(600.0, gt=0)
    # Chat requests admitted beyond those the engine runs at once (engine.max_num_seqs):
    # decoding their media or waiting for the engine. One more is answered 429 with
    # Retry-After, before any media work.
    max_queued_requests: int = Field(64, ge=1, le=1 << 16)
    retry_after_s: int = Field(2, ge=1, le=3600)
    log_level: str = "info"
    engine: EngineSettings
    # Engine-wide default pruning settings (the plugin's schema); requests win.
    sharp: dict[str, Any] = Field(default_factory=dict)
    # The lowest retention a request may ask for, checked before any media work (an
    # operator's floor on how little of a video an answer may rest on).
    min_retention: float = Field(0.0, ge=0.0, le=1.0)
    # Named pruning settings, served as model names `<served model>:<preset>`
    # (server/presets.py); None: only the bare model name.
    presets_file: Path | None = REPO_ROOT / "configs" / "pruning-presets.yaml"
    # The /inspect page (static HTML; its data calls need the API key like any other).
    inspect_page: bool = True
    media: MediaSettings = Field(default_factory=MediaSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    files: FilesSettings = Field(default_factory=FilesSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    recovery: RecoverySettings = Field(default_factory=RecoverySettings)

    @field_validator("sharp")
    @classmethod
    def _valid_sharp(cls, value: dict[str, Any]) -> dict[str, Any]:
        parse_settings(value)  # raises naming the field
        return value

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment variables override the YAML (passed as init kwargs).
        return env_settings, init_settings

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> ServerSettings:
        data = yaml.safe_load(Path(path).read_text()) or {}
        # Relative paths in a config are relative to the repository, whatever the cwd.
        engine = data.get("engine", {})
        if engine.get("model") and (REPO_ROOT / engine["model"]).exists():
            engine["model"] = str(REPO_ROOT / engine["model"])
        for section, key in (("security", "allowed_local_root"), ("files", "directory")):
            value = data.get(section, {}).get(key)
            if value and not Path(value).is_absolute():
                data[section][key] = str(REPO_ROOT / value)
        presets = data.get("presets_file")
        if presets and not Path(presets).is_absolute():
            data["presets_file"] = str(REPO_ROOT / presets)
        return cls(**{**data, **overrides})
