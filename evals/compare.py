"""Two annotators (or prompt versions) on the same gold items: a paired test and the difference's interval."""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest


def mcnemar(a_right: np.ndarray, b_right: np.ndarray) -> dict:
    """Exact McNemar test on the items where exactly one of the two is right."""
    a_right, b_right = np.asarray(a_right, bool), np.asarray(b_right, bool)
    only_a, only_b = int((a_right & ~b_right).sum()), int((~a_right & b_right).sum())
    p = binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return {"only_a_right": only_a, "only_b_right": only_b, "p_value": round(float(p), 6)}


def bootstrap_difference(a_right: np.ndarray, b_right: np.ndarray, *, rounds: int = 2000, level: float = 0.95,
                         seed: int = 0) -> dict:
    """Accuracy of b minus accuracy of a, with a paired bootstrap interval over items."""
    a, b = np.asarray(a_right, float), np.asarray(b_right, float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(len(a), size=(rounds, len(a)))
    diffs = b[idx].mean(axis=1) - a[idx].mean(axis=1)
    tail = (1 - level) / 2
    return {"difference": round(float(b.mean() - a.mean()), 4),
            "low": round(float(np.quantile(diffs, tail)), 4), "high": round(float(np.quantile(diffs, 1 - tail)), 4)}


def compare(a_right, b_right, alpha: float = 0.05) -> dict:
    """b against a: significantly worse, better, or no detectable difference."""
    test, interval = mcnemar(a_right, b_right), bootstrap_difference(a_right, b_right)
    verdict = "no significant difference"
    if test["p_value"] < alpha:
        verdict = "worse" if interval["difference"] < 0 else "better"
    return {"mcnemar": test, "accuracy_difference": interval, "verdict": verdict}
