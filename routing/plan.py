"""What the gold certifies now, and what more gold would buy: the gold plan.

From calibration gold already scored by a model that never saw its labels (CascadePolicy.gold_):
- the highest target the gold certifies now, and the automatic share at a few targets;
- how the automatic share at the project's target would grow with more gold: gold sets of each size
  are drawn from the gold there is (a smoothed bootstrap: each drawn item keeps its scores, and is
  right with the probability that items of its score are right, from a monotone fit on the gold, so
  an item drawn twice is not wrong twice for sure), the level is fitted on each draw, and the share
  is what that level accepts of the gold there is (the new items, near enough). Averaged over draws,
  so the estimate includes the draws that certify nothing, as a user's next batch of gold might.
- which new items to send to experts next: those scored nearest the level, where the test is decided.
"""

from __future__ import annotations

import numpy as np

from routing.cascade import CascadePolicy, Paths

TARGETS = (0.99, 0.95, 0.90, 0.85)
GROWTH = (1.0, 1.5, 2.0, 3.0, 4.0)  # gold sizes, as multiples of the gold there is
DRAWS = 20
MAX_TARGET_GRID = np.round(np.arange(0.99, 0.5, -0.01), 2)


def share_at(paths: Paths, truth: np.ndarray, labels: list, target: float, confidence: float, guarantee: str) -> float:
    """The share of these gold items a level fitted on them at `target` accepts."""
    policy = CascadePolicy(labels, target, confidence, guarantee).fit(paths, truth)
    return float((paths.accept(policy.lambda_)[0] >= 0).mean())


def max_target(paths: Paths, truth: np.ndarray, labels: list, confidence: float, guarantee: str) -> float | None:
    """The highest target (to 0.01) at which this gold certifies a level that accepts anything."""
    for target in MAX_TARGET_GRID:
        if share_at(paths, truth, labels, float(target), confidence, guarantee) > 0:
            return float(target)
    return None


def gold_plan(paths: Paths, truth: np.ndarray, labels: list, target: float, confidence: float, guarantee: str,
              sizes: list[int] | None = None, draws: int = DRAWS, seed: int = 0) -> list[dict]:
    """[{gold_items, auto_fraction}] for gold sets of each size (default: GROWTH times the gold there is)."""
    from sklearn.isotonic import IsotonicRegression

    n = len(truth)
    sizes = sizes or [int(round(g * n)) for g in GROWTH]
    rng = np.random.default_rng(seed)
    best = paths.best()
    at = np.argmax(np.where(paths.active, paths.score, -np.inf), axis=1)  # the stage of the best score
    predicted = paths.predicted[np.arange(n), at]
    finite = np.isfinite(best)
    right_rate = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(
        np.clip(best[finite], -50, 50), (predicted == truth)[finite]).predict(np.clip(np.where(finite, best, -50), -50, 50))
    wrong = np.where(truth != predicted, truth, (predicted + 1) % max(len(labels), 2))  # a wrong label for each
    plan = []
    for m in sizes:
        shares = []
        for _ in range(draws):
            pick = rng.integers(0, n, m)
            drawn_truth = np.where(rng.random(m) < right_rate[pick], predicted[pick], wrong[pick])
            policy = CascadePolicy(labels, target, confidence, guarantee).fit(paths[pick], drawn_truth)
            shares.append(float((paths.accept(policy.lambda_)[0] >= 0).mean()))
        plan.append({"gold_items": int(m), "auto_fraction": round(float(np.mean(shares)), 4),
                     "p10": round(float(np.percentile(shares, 10)), 4)})
    return plan


def plan(policy: CascadePolicy, sizes: list[int] | None = None, draws: int = DRAWS) -> dict:
    """The gold plan of a fitted policy: max_target, the share at TARGETS now, and the growth with more gold."""
    paths, truth = policy.gold_
    labels, confidence, guarantee = policy.label_names, 1 - policy.delta, policy.guarantee
    return {
        "max_target": max_target(paths, truth, labels, confidence, guarantee),
        "auto_fraction_at": {str(t): round(share_at(paths, truth, labels, t, confidence, guarantee), 4) for t in TARGETS},
        "gold_plan": gold_plan(paths, truth, labels, policy.target, confidence, guarantee, sizes, draws),
    }


def nearest_the_level(best: np.ndarray, level: float, count: int = 20) -> np.ndarray:
    """Indices of the items scored nearest the level (log-odds): labelling them sharpens the test there."""
    finite = np.where(np.isfinite(best), best, np.inf)
    return np.argsort(np.abs(finite - level))[:count]
