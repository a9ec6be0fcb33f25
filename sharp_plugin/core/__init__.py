"""ShaRP in plain PyTorch. Nothing here imports vLLM."""

from .budget import kept_count
from .policy import ScoringPass, ScoringResult, Selection, select_tokens
from .settings import NO_PRUNING, SharpSettings, SharpSettingsError, parse_settings

__all__ = [
    "NO_PRUNING",
    "ScoringPass",
    "ScoringResult",
    "Selection",
    "SharpSettings",
    "SharpSettingsError",
    "kept_count",
    "parse_settings",
    "select_tokens",
]
