"""A chat request's pruning settings and sampling parameters, validated before any media
work (the plugin validates the settings again inside vLLM)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sharp_plugin.core import parse_settings
from sharp_plugin.core.settings import SharpSettingsError

from ..engine import Engine
from ..errors import InvalidRequest, NotFound
from ..presets import apply_preset, resolve_model
from ..schemas import RETURN_SELECTION, ChatCompletionRequest
from ..settings import ServerSettings

# Keys of the `sharp` object that are the server's, not settings: report_id is ours to
# set, return_selection never reaches the plugin.
_SERVER_KEYS = frozenset({"report_id", RETURN_SELECTION})


@dataclass(frozen=True)
class RequestSettings:
    sharp: dict[str, Any]  # what goes to the plugin: the preset under the request's own
    return_selection: bool  # the report lists each video's kept tokens
    sampling: dict[str, Any]  # vLLM SamplingParams fields


def request_settings(
    body: ChatCompletionRequest, engine: Engine, settings: ServerSettings, presets: dict[str, dict[str, Any]]
) -> RequestSettings:
    """The model name's preset under the request's own `sharp` object, checked against
    the model and the server's floor, and the sampling parameters, checked by vLLM."""
    preset = resolve_model(body.model, engine.model_name, presets)
    if preset is None:
        raise NotFound(f"The model {body.model!r} does not exist", param="model", code="model_not_found")
    own, return_selection = sharp_object(body)
    sharp = apply_preset(preset, own)
    parsed = parse_settings(
        sharp,
        settings.sharp,
        num_decoder_layers=engine.num_decoder_layers,
        first_stage_layers=engine.first_stage_layers,
    )
    # `auto` chooses a retention per video, never below its min_retention: that bound is
    # what the server's floor applies to.
    field, lowest = (
        ("min_retention", parsed.min_retention)
        if parsed.retention == "auto"
        else ("retention", parsed.retention)
    )
    if parsed.prunes and lowest < settings.min_retention:
        raise SharpSettingsError(
            f"sharp.{field}: must be at least {settings.min_retention} on this server (min_retention), "
            f"got {lowest}",
            field=field,
        )
    sampling = sampling_params(body)
    engine.check_sampling(sampling)
    return RequestSettings(sharp=sharp, return_selection=return_selection, sampling=sampling)


def sharp_object(body: ChatCompletionRequest) -> tuple[dict[str, Any], bool]:
    """The request's `sharp` object, from the body field or vLLM's mm_processor_kwargs,
    without the server's keys, and whether it asked for the selections in its report."""
    nested = (body.mm_processor_kwargs or {}).get("sharp")
    if body.sharp is not None and nested is not None:
        raise InvalidRequest("Give `sharp` or `mm_processor_kwargs.sharp`, not both", param="sharp")
    raw = body.sharp if body.sharp is not None else nested
    if raw is None:
        return {}, False
    if not isinstance(raw, dict):
        raise SharpSettingsError("sharp: must be an object")
    return_selection = raw.get(RETURN_SELECTION, False)
    if not isinstance(return_selection, bool):
        raise SharpSettingsError(f"sharp.{RETURN_SELECTION}: must be a boolean", field=RETURN_SELECTION)
    return {k: v for k, v in raw.items() if k not in _SERVER_KEYS}, return_selection


def sampling_params(body: ChatCompletionRequest) -> dict[str, Any]:
    params: dict[str, Any] = {"n": body.n, "temperature": body.temperature, "top_p": body.top_p}
    if body.output_budget is not None:
        params["max_tokens"] = body.output_budget
    if body.seed is not None:
        params["seed"] = body.seed
    if body.stop is not None:
        params["stop"] = [body.stop] if isinstance(body.stop, str) else body.stop
    if body.ignore_eos:
        params["ignore_eos"] = True
    return params
