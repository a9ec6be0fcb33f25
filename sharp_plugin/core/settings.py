"""The pruning settings: one schema, shared by the plugin, the server and the YAML configs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .masks import SegmentMask

# `oracle` is for evaluation: it keeps tokens the caller names (a benchmark's ground truth).
Method = Literal["none", "sharp", "fastv", "uniform", "random", "oracle"]

# Bounds: every number a request can send is held to what the code can hold and what
# means something, so nothing a client controls can overflow inside the worker (where
# an exception would take the engine down for every request in flight).
MAX_VIDEO_TOKENS = 1 << 22  # no video has more visual tokens (an hour at 448^2 is ~0.5M)
MAX_PRUNE_LAYER = 255  # deeper than any served decoder; checked against the model too
MAX_SEGMENT_GROUPS = 1 << 16  # temporal groups per segment; more is "the whole video"
MAX_LAM = 100.0  # prior weight: past this the raw scores no longer matter
MAX_SEED = (1 << 63) - 1  # torch.Generator.manual_seed takes 64 bits
MAX_ORACLE_TOKENS = 1 << 16  # an evaluation's named tokens, not a whole video

TokenIndex = Annotated[int, Strict(), Field(ge=0, lt=MAX_VIDEO_TOKENS)]
GroupIndex = Annotated[int, Strict(), Field(ge=0, lt=MAX_VIDEO_TOKENS)]
Retention = Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)]
Debias = Literal["off", "black", "mean"]
SegmentMaskKind = Literal["block_causal", "local", "auto"]
# Where `segment_mask: auto` turns local. Below it the block-causal pass costs at most
# about 1.8x the local one (8k tokens), and it is the mask the quality bench measured
# first; from 16k tokens up its N^2 term makes it 3x slower and growing (5x at 32k)
# (bench/results/scoring_scaling.md). On the proxy task the two masks select alike:
# within one standard error at every retention (bench/results/quality_segment_mask.md).
LOCAL_MASK_FROM_TOKENS = 16384
PriorQuery = Literal["generic", "question"]
Calibration = Literal["subtract", "divide"]
BudgetSpread = Literal["global", "segments"]

# Methods that need the scoring pass (the model's own first K decoder layers).
SCORING_METHODS: frozenset[str] = frozenset({"sharp", "fastv"})


class SharpSettingsError(ValueError):
    """Invalid pruning settings. `field` names the offending field (dotted for nested)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class SharpSettings(BaseModel):
    """Per-request ShaRP settings (see docs/method.md for what each switch does).

    Strict types: a string where a number is expected is refused, not coerced, so a
    client bug surfaces as a 4xx naming the field instead of a silently different run.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    # The product's method. A request with no settings at all gets NO_PRUNING instead
    # (see parse_settings), so stock behaviour stays the default.
    method: Method = "sharp"
    # The share of a video's tokens kept, or "auto": chosen per video from how much of it
    # is new (core/redundancy.py), between min_retention and max_retention.
    retention: Retention | Literal["auto"] = 1.0
    min_retention: Retention = 0.02
    max_retention: Retention = 0.25
    # Static temporal groups (none of their tokens changed since the last group kept)
    # are not handed to the vision tower; their tokens count as pruned before the
    # selection chooses among the rest. The first group, and `keep_groups`, always stay.
    skip_static: bool = False
    keep_groups: tuple[GroupIndex, ...] = Field((), strict=False, max_length=MAX_ORACLE_TOKENS)
    # A token has changed when a channel of its mean colour (0..1) moved by more than
    # this (raised towards the video's own noise floor: core/redundancy.py). Used by
    # skip_static and retention "auto".
    change_threshold: float = Field(0.03, gt=0.0, le=1.0, allow_inf_nan=False)
    prune_layer: int = Field(2, ge=0, le=MAX_PRUNE_LAYER)
    # Width of a segment in temporal groups (Qwen: 2 frames per group); 0 turns masking off.
    segment_frames: int = Field(4, ge=0, le=MAX_SEGMENT_GROUPS)
    # How segments see each other in the scoring pass (sharp_plugin/core/masks.py):
    # `block_causal`, each segment sees every earlier one (O(N^2)); `local`, each sees
    # the prefix and itself only (O(N * S), linear in the video's length); `auto`, local
    # from LOCAL_MASK_FROM_TOKENS visual tokens up (long videos), block-causal below.
    segment_mask: SegmentMaskKind = "auto"
    debias: Debias = "black"
    # Which query scores the black-frame prior. `generic`: a fixed neutral question in the
    # model's chat template, so the prior depends only on the video's layout and is
    # computed once per grid size, not once per question (accuracy is kept:
    # bench/results/quality_prior_query.md). `question`: the request's own prompt text,
    # as in the method's definition; every new question then pays a second scoring pass.
    prior_query: PriorQuery = "generic"
    calibration: Calibration = "subtract"
    lam: float = Field(1.0, ge=0.0, le=MAX_LAM, allow_inf_nan=False)
    # How the budget is spread (sharp_plugin/core/segment_budget.py): `global`, one top-k
    # over the video; `segments`, each segment keeps its share of it, by score within it.
    budget_spread: BudgetSpread = "global"
    # Cosine similarity at or above which a token counts as a duplicate; 1.0 turns dedup off.
    dedup_threshold: float = Field(0.9, gt=0.0, le=1.0, allow_inf_nan=False)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    # For `oracle`: the video's token indices (vLLM's t, h, w order) kept first; the rest
    # of the budget is spread uniformly over the other tokens. Lax container type because
    # settings cross vLLM's process boundary as JSON (a tuple arrives as a list).
    oracle_tokens: tuple[TokenIndex, ...] = Field((), strict=False, max_length=MAX_ORACLE_TOKENS)

    @field_validator("oracle_tokens")
    @classmethod
    def _oracle_only(cls, tokens: tuple[int, ...], info: ValidationInfo) -> tuple[int, ...]:
        if tokens and info.data.get("method") != "oracle":
            raise ValueError("only used by method 'oracle'")
        return tokens

    @model_validator(mode="after")
    def _retention_bounds_in_order(self) -> SharpSettings:
        if self.min_retention > self.max_retention:
            raise SharpSettingsError(
                f"sharp.min_retention: must not exceed max_retention ({self.max_retention}), "
                f"got {self.min_retention}",
                field="min_retention",
            )
        return self

    # -- derived views -------------------------------------------------------------
    @property
    def prunes(self) -> bool:
        """True when the selection may drop tokens (skip_static drops groups before it,
        whatever the method)."""
        return self.method != "none" and (self.retention == "auto" or self.retention < 1.0)

    @property
    def measures_change(self) -> bool:
        """Whether the processor measures the video's change (core/redundancy.py)."""
        return self.skip_static or (self.prunes and self.retention == "auto")

    @property
    def needs_scoring_pass(self) -> bool:
        return self.prunes and self.method in SCORING_METHODS

    def segment_mask_for(self, num_tokens: int) -> SegmentMask:
        """The scoring pass's mask for a video of `num_tokens` visual tokens."""
        local = self.segment_mask == "local" or (
            self.segment_mask == "auto" and num_tokens >= LOCAL_MASK_FROM_TOKENS
        )
        return SegmentMask(self.segment_frames, local=local and self.segment_frames > 0)

    def effective(self) -> SharpSettings:
        """The switches that actually apply: `fastv` is the scoring pass with masking,
        debiasing and dedup all off, whatever the request said about them."""
        if self.method == "fastv":
            return self.model_copy(update={"segment_frames": 0, "debias": "off", "dedup_threshold": 1.0})
        return self

    def check_for_model(self, num_decoder_layers: int, first_stage_layers: int | None = None) -> None:
        """Checks that need the model: a scoring method's layer must exist (even at
        retention 1.0, where it would not run: the request is wrong either way), on the
        first pipeline stage, which is the only one that runs the scoring pass."""
        if self.method not in SCORING_METHODS:
            return
        if self.prune_layer >= num_decoder_layers:
            raise SharpSettingsError(
                f"sharp.prune_layer: must be smaller than the model's {num_decoder_layers} "
                f"decoder layers, got {self.prune_layer}",
                field="prune_layer",
            )
        if first_stage_layers is not None and self.prune_layer >= first_stage_layers:
            raise SharpSettingsError(
                f"sharp.prune_layer: must be smaller than the {first_stage_layers} decoder layers "
                f"of the first pipeline stage, got {self.prune_layer}",
                field="prune_layer",
            )


NO_PRUNING = SharpSettings(method="none")


def parse_settings(
    request: dict[str, Any] | None,
    defaults: dict[str, Any] | None = None,
    *,
    num_decoder_layers: int | None = None,
    first_stage_layers: int | None = None,
) -> SharpSettings:
    """Merge engine-wide defaults with the request (request wins) and validate.

    No settings at all (neither engine defaults nor request) -> NO_PRUNING. Settings that
    do not name a method mean ShaRP: {"retention": 0.25} prunes. vLLM's wording
    `pruning_rate` (= 1 - retention) is accepted instead of `retention`.
    Raises SharpSettingsError whose message starts with `sharp.<field>:`.
    """
    merged: dict[str, Any] = {**_with_retention(defaults), **_with_retention(request)}
    if not merged:
        return NO_PRUNING
    try:
        settings = SharpSettings.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        raised = first.get("ctx", {}).get("error")
        if isinstance(raised, SharpSettingsError):  # a check across fields says it itself
            raise raised from None
        loc, message = first["loc"], first["msg"]
        if loc[:1] == ("retention",) and len(loc) > 1:  # a member of retention's union
            loc = ("retention",)
            if first["type"] in ("float_type", "literal_error"):
                message = "Input should be a number in (0, 1] or 'auto'"
        field = ".".join(str(p) for p in loc) or None
        where = f"sharp.{field}" if field else "sharp"
        raise SharpSettingsError(f"{where}: {message}", field=field) from None
    if num_decoder_layers is not None:
        settings.check_for_model(num_decoder_layers, first_stage_layers)
    return settings


def _with_retention(settings: dict[str, Any] | None) -> dict[str, Any]:
    settings = dict(settings or {})
    if "pruning_rate" not in settings:
        return settings
    if "retention" in settings:
        raise SharpSettingsError(
            "sharp.pruning_rate: give pruning_rate or retention, not both", "pruning_rate"
        )
    rate = settings.pop("pruning_rate")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
        raise SharpSettingsError("sharp.pruning_rate: must be a number in [0, 1)", "pruning_rate")
    # 1 - 0.9 is 0.09999999999999998 in binary floating point, which keeps one token
    # fewer than retention 0.1 for some N; 12 decimals undo that and nothing else.
    retention = round(1.0 - float(rate), 12)
    if retention <= 0.0:
        raise SharpSettingsError("sharp.pruning_rate: must leave at least some tokens", "pruning_rate")
    settings["retention"] = retention
    return settings
