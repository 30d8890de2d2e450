"""Confidence intervals for accuracies measured on finite samples."""

from __future__ import annotations

import math
import re

SAMPLE_SIZE = re.compile(r"\(n=(\d+),")
"""The examples an accuracy was measured on, as its stored source gives them: "measured:exact-match:toy(n=200,cpu)"."""


def wilson_interval(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval (95% by default). Chosen over the normal approximation because it stays
    inside [0, 1] and behaves at 0% and 100%, which small evaluation subsets hit often."""
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= correct <= n:
        raise ValueError(f"correct={correct} must be within 0..n={n}")
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if correct == 0 else max(0.0, centre - half)
    high = 1.0 if correct == n else min(1.0, centre + half)
    return (low, high)


def stored_interval(accuracy: float, source: str | None) -> tuple[int, float, float] | None:
    """(n, low, high): the Wilson interval of a stored accuracy, its sample size read from its source. None where
    the source names no n, or the accuracy is no count of n (an unbiased pass@1 over several samples), so that
    readers of the stored front (recommend) say how far apart two accuracies must be before they differ."""
    m = SAMPLE_SIZE.search(source or "")
    if m is None or not math.isfinite(accuracy):  # a NaN or infinite one (hand-edited trial attributes) is no count
        return None
    n = int(m.group(1))
    correct = round(accuracy * n)
    if not 0 <= correct <= n or n == 0 or abs(correct - accuracy * n) > 1e-6 * n:
        return None
    return (n, *wilson_interval(correct, n))


def accuracy_text(accuracy: float, kind: str, source: str | None) -> str:
    """A stored accuracy as every reader says it: "0.960 (measured, n=200, 95% CI 0.923-0.980)" - how it was
    obtained (`kind`: measured / counted / modelled) and, where its source gives the sample size, its Wilson 95%
    interval (`stored_interval`), so that two accuracies closer than the noise read as such."""
    ci = stored_interval(accuracy, source)
    return f"{accuracy:.3f} ({kind}" + (f", n={ci[0]}, 95% CI {ci[1]:.3f}-{ci[2]:.3f})" if ci else ")")
