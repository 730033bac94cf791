"""Calibration on gold and acceptance levels with a finite-sample guarantee.

The guarantee: with probability at least `confidence` over the draw of the gold that tests
it, the items a level accepts have accuracy at least `target_accuracy`, for items drawn from
the same distribution as the gold. Levels are chosen by fixed-sequence testing
(Learn-then-Test): candidates are tested from the strictest to the loosest with a one-sided
Clopper-Pearson bound, stopping at the first that fails, so no correction is needed along a
sequence; two sequences with different starting points share the error budget (Bonferroni).
It does not hold when the gold is not representative of the new items (picked differently,
or the data drifted since).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import beta

GRID = np.unique(np.concatenate([np.linspace(0.0, 0.99, 100), 1 - np.logspace(-2, -6, 41)]))


def clopper_pearson_lower(successes: int, n: int, delta: float) -> float:
    """One-sided lower bound on a binomial proportion, holding with probability 1 - delta."""
    if n == 0 or successes == 0:
        return 0.0
    return float(beta.ppf(delta, successes, n - successes + 1))


def min_n(target: float, delta: float) -> int:
    """The fewest items whose bound could clear the target even if all were right."""
    return int(np.ceil(np.log(delta) / np.log(target)))


def start_n(target: float, delta: float, available: int, errors: int = 0) -> int:
    """Where a fixed-sequence test should start: the fewest accepted items whose bound could
    clear the target with `errors` wrong among them (fewer if there are not that many items).

    Starting at the bare minimum makes the first test fail on one unlucky error, which ends
    the sequence with nothing accepted. This depends only on counts, never on which items are
    right, so the test stays valid."""
    for allowed in range(errors, -1, -1):
        n = max(min_n(target, delta), allowed + 1)
        while n <= available and clopper_pearson_lower(n - allowed, n, delta) < target:
            n += 1
        if n <= available:
            return n
    return min_n(target, delta)


# Fixed sequences run side by side, each on an equal share of the error budget (Bonferroni):
# one starts as soon as a flawless run could pass, one where a few errors are tolerable.
STARTS = (0, 3)


def fixed_sequence(evaluate, available: int, target: float, delta: float) -> tuple[float, float | None]:
    """The loosest level on GRID whose accepted items pass the accuracy test, and its bound.

    `evaluate(level)` gives (accepted, right) for a level; levels are tested strictest first and
    each sequence stops at its first failure. (inf, None): nothing can be accepted."""
    best, best_bound = np.inf, None
    share = delta / len(STARTS)
    for errors in STARTS:
        need = start_n(target, share, available, errors)
        for level in GRID[::-1]:
            accepted, right = evaluate(level)
            if accepted < need:
                continue
            bound = clopper_pearson_lower(right, accepted, share)
            if bound < target:
                break
            if level < best:
                best, best_bound = float(level), bound
    return best, best_bound


class Calibrator:
    """Maps an aggregate's confidence to the probability of being right.

    Platt scaling on the confidence's log-odds: a logistic regression, monotone and smooth,
    which keeps the resolution of posteriors near 1 (isotonic steps flatten them), so
    near-certain items stay distinguishable from merely likely ones."""

    def fit(self, scores: np.ndarray, correct: np.ndarray) -> "Calibrator":
        from sklearn.linear_model import LogisticRegression

        scores, correct = np.asarray(scores, float), np.asarray(correct, int)
        self.model_ = None
        self.base_rate_ = float(correct.mean()) if len(correct) else 0.0
        if len(scores) >= 10 and 0 < correct.mean() < 1:
            self.model_ = LogisticRegression(C=100.0).fit(_logit(scores)[:, None], correct)
            if self.model_.coef_[0, 0] <= 0:  # confidence that does not predict correctness
                self.model_ = None
        return self

    def predict(self, scores: np.ndarray) -> np.ndarray:
        scores = np.asarray(scores, float)
        if self.model_ is None:
            return np.full(len(scores), self.base_rate_)
        return self.model_.predict_proba(_logit(scores)[:, None])[:, 1]


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return np.log(p) - np.log1p(-p)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    confidence, correct = np.asarray(confidence, float), np.asarray(correct, float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            error += mask.mean() * abs(confidence[mask].mean() - correct[mask].mean())
    return float(error)
