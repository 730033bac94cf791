import json

import numpy as np
from scipy.stats import binomtest

from routing.calibration import Calibrator, clopper_pearson_lower, start_n
from routing.cascade import CascadePolicy, StageScores
from routing.replay import replay
from tests.conftest import DATASETS, needs_datasets
from tests.test_cli import labeler


def test_clopper_pearson_matches_scipy():
    for k, n in [(45, 50), (190, 200), (3, 10)]:
        expected = binomtest(k, n).proportion_ci(confidence_level=0.8, method="exact").low  # two-sided 80% = one-sided 90%
        assert abs(clopper_pearson_lower(k, n, 0.1) - expected) < 1e-9
    assert clopper_pearson_lower(0, 10, 0.1) == 0.0


def test_start_depends_on_counts_only_and_allows_slack():
    assert start_n(0.95, 0.1, 1000) == 45  # 0.1 ** (1/45) >= 0.95
    assert clopper_pearson_lower(start_n(0.95, 0.1, 1000, errors=3) - 3, start_n(0.95, 0.1, 1000, errors=3), 0.1) >= 0.95
    assert start_n(0.95, 0.1, 1000, errors=3) > 45
    assert start_n(0.95, 0.1, 30, errors=3) == 45  # too few items to tolerate errors: the bare minimum


def _one_stage_level(scores, correct, target=0.95, confidence=0.9):
    """The level a one-stage cascade picks when `correct` says which predictions (label 1) are right."""
    scores, correct = np.asarray(scores, float), np.asarray(correct, bool)
    n = len(scores)
    truth = np.where(correct, 1, 0)
    stage = StageScores(np.ones(n, int), scores, np.ones(n, bool))
    half = np.arange(n) % 2 == 0
    cut = lambda m: StageScores(stage.predicted[m], stage.score[m], stage.active[m])  # noqa: E731
    return CascadePolicy([0, 1], target, confidence).fit([cut(half)], truth[half], [cut(~half)], truth[~half]).lambda_


def test_level_refuses_confident_but_wrong_scores():
    # Miscalibrated: every score is 0.99 but only 85% are right. Nothing may be accepted at 0.95.
    rng = np.random.default_rng(0)
    assert _one_stage_level(np.full(1000, 0.99), rng.random(1000) < 0.85) == np.inf
    # Informative scores: the high ones are right; a level is found, above the noise.
    scores = np.concatenate([rng.uniform(0.9, 1.0, 800), rng.uniform(0.5, 0.9, 800)])
    correct = np.concatenate([rng.random(800) < 0.99, rng.random(800) < 0.6])
    order = rng.permutation(1600)
    assert 0.85 <= _one_stage_level(scores[order], correct[order]) <= 0.95


def test_platt_calibration_is_monotone_and_recovers_the_rate():
    rng = np.random.default_rng(1)
    scores = rng.uniform(0.5, 0.999, 4000)
    logit = np.log(scores / (1 - scores))
    truly = 1 / (1 + np.exp(-(0.5 * logit - 0.2)))  # overconfident scores
    correct = rng.random(4000) < truly
    probe = np.array([0.6, 0.8, 0.99])
    calibrated = Calibrator().fit(scores, correct).predict(probe)
    assert np.all(np.diff(calibrated) > 0)
    expected = 1 / (1 + np.exp(-(0.5 * np.log(probe / (1 - probe)) - 0.2)))
    assert np.allclose(calibrated, expected, atol=0.04)
    assert np.all(calibrated < probe)  # it learned that the scores overstate


def _synthetic_crowd(seed: int, n_tasks: int = 600, n_workers: int = 40, votes: int = 7):
    """Workers with known confusion matrices: some good, some biased toward label 1, some random."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(2, size=n_tasks)
    kinds = rng.choice(["good", "biased", "random"], size=n_workers, p=[0.5, 0.3, 0.2])
    records = []
    for t in range(n_tasks):
        for w in rng.choice(n_workers, size=votes, replace=False):
            if kinds[w] == "good":
                label = truth[t] if rng.random() < 0.85 else 1 - truth[t]
            elif kinds[w] == "biased":
                label = 1 if rng.random() < 0.7 else truth[t]
            else:
                label = rng.integers(2)
            records.append((f"t{t}", f"w{w}", int(label)))
    return records, {f"t{t}": int(truth[t]) for t in range(n_tasks)}


def test_the_guarantee_holds_in_simulation():
    """Over many draws, the auto-accepted accuracy reaches the target at least about as often as promised."""
    target, confidence, runs = 0.95, 0.9, 40
    held, fractions = 0, []
    for seed in range(runs):
        records, gold = _synthetic_crowd(seed)
        result = replay(records, gold, target, confidence, seed)
        fractions.append(result["auto_fraction"])
        held += result["auto_accuracy"] is None or result["auto_accuracy"] >= target
    # The bound is about the population; on a finite test half a little more slack is fair.
    assert held >= 0.8 * runs, held
    assert np.mean(fractions) > 0.3  # and it still accepts a useful share


def test_policy_uses_later_stages_when_the_first_is_not_enough():
    rng = np.random.default_rng(2)
    n = 600
    truth = rng.integers(2, size=n)
    # Stage 0: weak (70% right, confidence uninformative); stage 1: strong and confident.
    s0_pred = np.where(rng.random(n) < 0.7, truth, 1 - truth)
    s1_pred = np.where(rng.random(n) < 0.995, truth, 1 - truth)
    stages = [StageScores(s0_pred, np.full(n, 0.7), np.ones(n, bool)),
              StageScores(s1_pred, np.full(n, 0.999), np.ones(n, bool))]
    half = n // 2
    cut = lambda s, sl: StageScores(s.predicted[sl], s.score[sl], s.active[sl])  # noqa: E731
    policy = CascadePolicy([0, 1], 0.95, 0.9).fit(
        [cut(s, slice(0, half)) for s in stages], truth[:half], [cut(s, slice(half, n)) for s in stages], truth[half:]
    )
    accepted_at, _ = policy.simulate(stages, policy.lambda_)
    assert 0.7 < policy.lambda_ <= 0.999
    assert (accepted_at == 1).mean() > 0.95


@needs_datasets
def test_replay_command_reports_the_figures():
    result = json.loads(labeler("replay", DATASETS / "rte" / "labels.csv", "--gold", DATASETS / "rte" / "gold.csv",
                                "--target-accuracy", "0.95", "--seed", "3", "--json").stdout)
    for key in ("auto_fraction", "auto_accuracy", "accuracy_all", "votes_used", "votes_available"):
        assert key in result
    assert result["votes_used"] <= result["votes_available"] == 4000
    assert 0 < result["auto_fraction"] <= 1
