"""Calibration on gold and acceptance levels with a finite-sample guarantee.

The guarantee: with probability at least `confidence` over the draw of the gold that tests
it, the items a level accepts have accuracy at least `target_accuracy`, for items drawn from
the same distribution as the gold, as long as the scores the level is tested on came from a
model that never saw those gold labels. It does not hold when the gold is not representative
of the new items (picked differently, or the data drifted since).

The level is chosen by fixed-sequence testing (Learn-then-Test): candidate levels are tested
one after the other with a one-sided Clopper-Pearson bound, stopping at the first that fails,
so no correction is needed along the sequence. The sequence runs over coverage: it starts at
the level that accepts START_COVERAGE of the gold (or the fewest items a flawless set needs
to pass) and loosens by STEP of the gold at a time. Levels come from the scores alone, never
from which items are right, so the test stays valid. Starting at the very top would let one
unlucky item there end the sequence with nothing accepted: a set too small to test certifies
nothing, and the most confident block is not always the most accurate one.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import beta

START_COVERAGE = 0.2  # the first level tested accepts this share of the gold
STEP = 0.02  # each next level accepts this much more of the gold
MAX_EXPECTED_LEVELS = 400  # levels tried by the expected-accuracy guarantee
# ...and the gold items its accepted region must hold, in errors allowed: with fewer, the best-looking
# block of a set no level suits is often a lucky one (a 0.91-right set accepted at 0.95 on 20 gold).
MIN_EXPECTED_SUPPORT = 2


def clopper_pearson_lower(successes: int, n: int, delta: float) -> float:
    """One-sided lower bound on a binomial proportion, holding with probability 1 - delta."""
    if n == 0 or successes == 0:
        return 0.0
    return float(beta.ppf(delta, successes, n - successes + 1))


def min_n(target: float, delta: float) -> int:
    """The fewest items whose bound could clear the target even if all were right."""
    return int(np.ceil(np.log(delta) / np.log(target)))


def start_n(target: float, delta: float) -> int:
    """The fewest items whose bound clears the target with half the errors it allows: a test
    that starts smaller fails on the first unlucky error."""
    n = min_n(target, delta)
    while clopper_pearson_lower(n - int(n * (1 - target) / 2), n, delta) < target:
        n += 1
    return n


def choose_level(best: np.ndarray, evaluate, target: float, delta: float,
                 scores: np.ndarray | None = None) -> tuple[float, float | None]:
    """The loosest level whose accepted items pass the accuracy test, and its bound.

    `best[i]`: the highest score gold item i reaches (accepted at a level exactly when best >= it;
    -inf: never asked). `scores`: every score any item has at any stage, where items are asked in
    stages: below the level where every item is accepted, a lower level still moves acceptance to
    earlier, cheaper stages, so levels continue through these scores' quantiles.
    `evaluate(level)` gives (accepted, right). (inf, None): nothing can be accepted."""
    n = len(best)
    if n < min_n(target, delta):
        return np.inf, None
    level, bound, tested = np.inf, None, None
    for candidate in candidate_levels(best, scores, max(START_COVERAGE, start_n(target, delta) / n)):
        if candidate == tested:
            continue  # the same level as the last test
        tested = candidate
        accepted, right = evaluate(candidate)
        lower_bound = clopper_pearson_lower(right, accepted, delta)
        if lower_bound < target:
            break
        level, bound = float(candidate), lower_bound
    return level, bound


def candidate_levels(best: np.ndarray, scores: np.ndarray | None, start: float) -> np.ndarray:
    """Levels to test, tightest first: those accepting `start` of the gold, then STEP more at a time, then
    (where items are asked in stages) the quantiles of every stage's scores below them."""
    n = len(best)
    ranked = np.sort(np.asarray(best, float))[::-1]
    steps = np.arange(start, 1.0 + STEP, STEP)
    levels = ranked[np.minimum(np.ceil(steps * n).astype(int), n) - 1]
    if scores is not None and len(scores):
        finite = np.asarray(scores, float)[np.isfinite(scores)]
        lower = np.quantile(finite, np.arange(1.0, 0.0, -STEP)) if len(finite) else np.array([])
        levels = np.concatenate([levels, lower[lower < levels.min(initial=np.inf)]])
    return levels[np.isfinite(levels)]


def choose_level_expected(best: np.ndarray, evaluate, target: float,
                          scores: np.ndarray | None = None) -> tuple[float, float | None]:
    """The loosest level whose error rate among accepted items is at most 1 - target in expectation over
    draws of the gold (a false discovery rate), and that level's estimated accuracy.

    Conformal selection with Benjamini-Hochberg (Jin and Candès, 2023), for new items distributed as the
    gold: an item's conformal p-value is (1 + the gold items wrong at its score or above) / (n + 1), and
    BH at alpha = 1 - target accepts every item of score >= t for the lowest t with
    (1 + wrong(t)) / (n + 1) <= alpha * accepted(t) / n. Step-up, so no sequence to stop early:
    one unlucky block at the top costs nothing. Items that tie are accepted or refused together."""
    n, alpha = len(best), 1.0 - target
    if n == 0:
        return np.inf, None
    finite = np.unique(np.asarray(best, float)[np.isfinite(best)])
    if len(finite) > MAX_EXPECTED_LEVELS:  # every distinct score is a level BH could stop at; a fine grid will do
        finite = np.unique(np.quantile(finite, np.linspace(0, 1, MAX_EXPECTED_LEVELS)))
    level, estimate = np.inf, None
    for candidate in np.unique(np.concatenate([finite, candidate_levels(best, scores, 1.0)])):
        accepted, right = evaluate(candidate)
        if accepted >= MIN_EXPECTED_SUPPORT / alpha and (1 + accepted - right) * n / ((n + 1) * accepted) <= alpha \
                and candidate < level:
            level, estimate = float(candidate), 1.0 - (1 + accepted - right) * n / ((n + 1) * accepted)
    return level, estimate


DRIFT_ALPHA = 0.01  # significance of a score drift


def score_drift(gold: np.ndarray, new: np.ndarray, alpha: float = DRIFT_ALPHA) -> dict | None:
    """Are the new items' scores drawn like the calibration gold's? A two-sided Mann-Whitney test (ties
    corrected): gold picked among the easy items scores higher than the items it is meant to speak for,
    and then the guarantee does not hold for them. The scores: routing.cascade.Paths.ease."""
    from scipy.stats import mannwhitneyu

    gold, new = np.asarray(gold, float), np.asarray(new, float)
    gold, new = gold[np.isfinite(gold)], new[np.isfinite(new)]
    if len(gold) < 10 or len(new) < 10:
        return None
    test = mannwhitneyu(gold, new, alternative="two-sided")
    return {"statistic": round(float(test.statistic / (len(gold) * len(new))), 4), "p_value": float(test.pvalue),
            "flagged": bool(test.pvalue < alpha)}


class Calibrator:
    """Maps an aggregate's confidence, given as the log-odds of its top label, to the probability
    of being right.

    Platt scaling: a logistic regression on the log-odds, monotone and smooth, which keeps the
    resolution of posteriors near 1 (isotonic steps flatten them), so near-certain items stay
    distinguishable from merely likely ones."""

    def fit(self, log_odds: np.ndarray, correct: np.ndarray) -> "Calibrator":
        from sklearn.linear_model import LogisticRegression

        log_odds, correct = _finite(log_odds), np.asarray(correct, int)
        self.model_ = None
        self.base_rate_ = float(correct.mean()) if len(correct) else 0.0
        if len(log_odds) >= 10 and 0 < correct.mean() < 1:
            self.model_ = LogisticRegression(C=100.0).fit(log_odds[:, None], correct)
            if self.model_.coef_[0, 0] <= 0:  # confidence that does not predict correctness
                self.model_ = None
        return self

    def predict(self, log_odds: np.ndarray) -> np.ndarray:
        log_odds = _finite(log_odds)
        if self.model_ is None:
            return np.full(len(log_odds), self.base_rate_)
        return self.model_.predict_proba(log_odds[:, None])[:, 1]


def _finite(log_odds) -> np.ndarray:
    return np.clip(np.asarray(log_odds, float), -50.0, 50.0)


def log_odds(p) -> np.ndarray:
    p = np.clip(np.asarray(p, float), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def probability(log_odds) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(log_odds, float)))


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
