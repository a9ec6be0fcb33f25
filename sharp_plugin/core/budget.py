"""How many visual tokens a video keeps. One rounding rule, used by the processor
(placeholder count) and the model (selection), so the two can never disagree."""

from __future__ import annotations

import math


def kept_count(retention: float, num_tokens: int) -> int:
    """k = max(1, round(retention * N)), rounding halves up.

    Python's round() is round-half-to-even (round(40.5) == 40); a budget that
    flips with the parity of N surprises users, so halves go up here.
    """
    if num_tokens <= 0:
        raise ValueError(f"num_tokens must be positive, got {num_tokens}")
    return max(1, min(num_tokens, math.floor(retention * num_tokens + 0.5)))
