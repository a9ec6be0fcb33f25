"""Pruning presets as model names, so that any OpenAI client (or lmms-eval, or a chat UI)
can pick a pruning setting with the one field every client sends: `model`.

Scheme: `<served model>:<preset>`, e.g. `sharp-proxy-qwen25vl:sharp-r10`, one per entry
of the presets file (`configs/pruning-presets.yaml`). The colon cannot appear in a
preset name, so the split is unambiguous even when the served name has one. Settings
layer as: engine-wide `sharp` defaults < the preset < the request's own `sharp` object,
field by field (so `{"return_selection": true}` on a preset model keeps the preset).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sharp_plugin.core import parse_settings

SEPARATOR = ":"


def load_presets(path: Path | None) -> dict[str, dict[str, Any]]:
    """The presets file's entries, each validated against the plugin's schema at start-up
    (a broken preset stops the server, instead of failing the first request naming it)."""
    if path is None:
        return {}
    presets = yaml.safe_load(path.read_text()) or {}
    if not isinstance(presets, dict):
        raise ValueError(f"{path}: must map preset names to settings")
    for name, settings in presets.items():
        if not isinstance(name, str) or not name or SEPARATOR in name:
            raise ValueError(f"{path}: preset name {name!r} must be a non-empty string without {SEPARATOR!r}")
        try:
            parse_settings(settings)
        except ValueError as exc:
            raise ValueError(f"{path}: preset {name!r}: {exc}") from None
    return presets


def model_names(served: str, presets: dict[str, dict[str, Any]]) -> list[str]:
    """What /v1/models lists: the served model, then one name per preset."""
    return [served, *(f"{served}{SEPARATOR}{name}" for name in presets)]


def resolve_model(requested: str, served: str, presets: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The preset a requested model name selects ({} for the bare served name), or None
    when the name is not one this server serves."""
    if requested == served:
        return {}
    prefix = served + SEPARATOR
    if requested.startswith(prefix):
        return presets.get(requested[len(prefix) :])
    return None


def apply_preset(preset: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """A request's settings on top of its preset's, field by field. A request that gives
    vLLM's `pruning_rate` replaces the preset's `retention` (they are one setting)."""
    base = {k: v for k, v in preset.items() if not ("pruning_rate" in own and k == "retention")}
    return {**base, **own}
