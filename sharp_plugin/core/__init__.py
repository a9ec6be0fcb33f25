"""ShaRP in plain PyTorch. Nothing here imports vLLM."""

from .budget import kept_count
from .policy import ScoringPass, ScoringResult, Selection, select_tokens
from .settings import SharpSettings, SharpSettingsError, parse_settings

__all__ = [
    "ScoringPass",
    "ScoringResult",
    "Selection",
    "SharpSettings",
    "SharpSettingsError",
    "kept_count",
    "parse_settings",
    "select_tokens",
]
