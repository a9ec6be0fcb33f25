"""How the benches state a figure: a ratio measured side by side, its arms interleaved
over rounds, as a median with a 95% bootstrap interval; a quality difference paired per
clip, with its standard error. A target is met only when the interval's lower end
clears it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

RESAMPLES = 10_000


def bootstrap_interval(
    values: Sequence[float], statistic: Callable = np.median, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """The percentile bootstrap interval of `statistic` over `values`."""
    data = np.asarray(values, dtype=float)
    if data.size < 2:
        value = float(statistic(data)) if data.size else float("nan")
        return value, value
    rng = np.random.default_rng(seed)
    samples = data[rng.integers(0, data.size, size=(RESAMPLES, data.size))]
    estimates = statistic(samples, axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(estimates, [tail, 100 - tail])
    return float(low), float(high)


def ratio(numerators: Sequence[float], denominators: Sequence[float]) -> dict:
    """A ratio of two arms measured in the same rounds: each round's ratio, their median
    and its 95% bootstrap interval. E.g. a speed-up: ratio(stock_ms, ours_ms)."""
    per_round = [a / b for a, b in zip(numerators, denominators, strict=True)]
    low, high = bootstrap_interval(per_round)
    return {"median": float(np.median(per_round)), "ci95": [low, high], "rounds": per_round}


def median_with_interval(values: Sequence[float]) -> dict:
    low, high = bootstrap_interval(values)
    return {"median": float(np.median(values)), "ci95": [low, high], "n": len(values)}


def met(summary: dict, target: float) -> bool:
    """A figure meets a target (at least) only when its interval's lower end clears it."""
    return summary["ci95"][0] >= target


def within(summary: dict, low: float, high: float) -> bool:
    """The whole interval lies in [low, high]."""
    return low <= summary["ci95"][0] and summary["ci95"][1] <= high


def paired_difference(a: Sequence[bool | float], b: Sequence[bool | float]) -> dict:
    """Mean of a - b over the same items (per-clip outcomes), with its standard error."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    se = float(diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else float("nan")
    return {"difference": float(diff.mean()), "se": se, "n": int(diff.size)}


def binomial_se(accuracy: float, n: int) -> float:
    return float(np.sqrt(accuracy * (1 - accuracy) / max(n, 1)))


def percentile_label(count: int) -> tuple[str, float]:
    """The highest tail percentile a sample of `count` supports: p99 from 100 requests,
    p90 from 10, else the maximum."""
    if count >= 100:
        return "p99", 99.0
    if count >= 10:
        return "p90", 90.0
    return "max", 100.0
