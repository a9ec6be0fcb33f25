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


def fitting_retention(other_tokens: int, video_tokens: list[int], budget: int) -> float | None:
    """The largest retention, rounded down to 4 decimals, at which a prompt of
    `other_tokens` (text, images, never-pruned rows) plus each video's kept tokens fits
    in `budget` tokens; None when not even one token per video fits.

    What a refusal names, so a client can retry with a retention that works: k is
    monotone in the retention, so a bisection over it finds the bound.
    """
    if not video_tokens or other_tokens + len(video_tokens) > budget:
        return None

    def fits(retention: float) -> bool:
        return other_tokens + sum(kept_count(retention, n) for n in video_tokens) <= budget

    if fits(1.0):
        return 1.0
    low, high = 0.0, 1.0  # fits(low) holds (one token per video), fits(high) does not
    for _ in range(50):
        middle = (low + high) / 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    rounded = math.floor(low * 10_000) / 10_000
    # The bisection's bound can sit a rounding error below a 4-decimal value that fits.
    while rounded < 1 and fits(round(rounded + 1e-4, 4)):
        rounded = round(rounded + 1e-4, 4)
    # Below 1e-4 the rounding reaches 0, which is not a retention: give the exact bound.
    return rounded if rounded > 0 and fits(rounded) else low
