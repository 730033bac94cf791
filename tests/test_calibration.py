import json
from collections import Counter

import numpy as np
import pytest
from scipy.stats import binomtest

from routing.calibration import Calibrator, clopper_pearson_lower, log_odds, min_n, score_drift, start_n
from routing.cascade import CascadePolicy, Paths, build_paths
from routing.replay import worker_model
from routing.votes import VoteTable
from tests.conftest import DATASETS, needs_datasets
from tests.test_cli import labeler

pytestmark = pytest.mark.once  # computation only: the PostgreSQL pass leaves it out


def test_clopper_pearson_matches_scipy():
    for k, n in [(45, 50), (190, 200), (3, 10)]:
        expected = binomtest(k, n).proportion_ci(confidence_level=0.8, method="exact").low  # two-sided 80% = one-sided 90%
        assert abs(clopper_pearson_lower(k, n, 0.1) - expected) < 1e-9
    assert clopper_pearson_lower(0, 10, 0.1) == 0.0


def test_the_sequence_starts_where_a_few_errors_can_pass():
    assert min_n(0.95, 0.1) == 45  # 0.1 ** (1/45) >= 0.95: the fewest a flawless set needs
    n = start_n(0.95, 0.1)
    assert clopper_pearson_lower(n - int(n * 0.05 / 2), n, 0.1) >= 0.95  # half the tolerated errors pass
    assert clopper_pearson_lower(n - 1 - int((n - 1) * 0.05 / 2), n - 1, 0.1) < 0.95  # and no smaller set would
    assert n > min_n(0.95, 0.1)


def paths_of(*stages) -> Paths:
    """Paths for two labels from (predicted label, top probability) per stage."""
    logits = []
    for predicted, prob in stages:
        lo = np.log(np.clip(1 - prob, 1e-300, None))
        hi = np.log(prob)
        logits.append(np.where(np.asarray(predicted)[:, None] == np.arange(2), hi[:, None], lo[:, None]))
    n = len(stages[0][0])
    return Paths(np.stack(logits, axis=1), np.ones((n, len(stages)), bool), np.zeros((1, len(stages), 2, 2)))


def _one_stage_level(scores, correct, target=0.95, confidence=0.9):
    """The level a one-stage cascade picks when `correct` says which predictions (label 1) are right."""
    scores, correct = np.asarray(scores, float), np.asarray(correct, bool)
    return CascadePolicy([0, 1], target, confidence).fit(paths_of((np.ones(len(scores), int), scores)),
                                                         np.where(correct, 1, 0))


def test_level_refuses_confident_but_wrong_scores():
    # Miscalibrated: every score is 0.99 but only 85% are right. Nothing may be accepted at 0.95.
    rng = np.random.default_rng(0)
    assert _one_stage_level(np.full(1000, 0.99), rng.random(1000) < 0.85).level is None
    # Informative scores: the high ones are right; a level is found, above the noise.
    scores = np.concatenate([rng.uniform(0.9, 1.0, 800), rng.uniform(0.5, 0.9, 800)])
    correct = np.concatenate([rng.random(800) < 0.99, rng.random(800) < 0.6])
    order = rng.permutation(1600)
    assert 0.85 <= _one_stage_level(scores[order], correct[order]).level <= 0.95


def test_a_bad_block_at_the_very_top_does_not_end_the_sequence():
    # The most confident 1% are only 80% right (a crowd that errs together); the next 80% are 98.5% right.
    rng = np.random.default_rng(3)
    top, rest, tail = 10, 800, 190
    scores = np.concatenate([np.full(top, 0.999999), rng.uniform(0.95, 0.999, rest), rng.uniform(0.5, 0.7, tail)])
    correct = np.concatenate([np.arange(top) >= 2, rng.random(rest) < 0.985, rng.random(tail) < 0.5])
    policy = _one_stage_level(scores, correct)
    assert clopper_pearson_lower(8, 10, 0.1) < 0.95  # a sequence starting at the top would stop there
    assert policy.level is not None and policy.level < 0.96


def test_platt_calibration_is_monotone_and_recovers_the_rate():
    rng = np.random.default_rng(1)
    scores = rng.uniform(0.5, 0.999, 4000)
    logit = np.log(scores / (1 - scores))
    truly = 1 / (1 + np.exp(-(0.5 * logit - 0.2)))  # overconfident scores
    correct = rng.random(4000) < truly
    probe = np.array([0.6, 0.8, 0.99])
    calibrated = Calibrator().fit(log_odds(scores), correct).predict(log_odds(probe))
    assert np.all(np.diff(calibrated) > 0)
    expected = 1 / (1 + np.exp(-(0.5 * np.log(probe / (1 - probe)) - 0.2)))
    assert np.allclose(calibrated, expected, atol=0.04)
    assert np.all(calibrated < probe)  # it learned that the scores overstate


def _synthetic_crowd(seed: int, n_tasks: int, traps: float = 0.0, n_workers: int = 40, votes: int = 7):
    """Workers with known behaviour: some good, some biased toward label 1, some random; `traps` is
    the share of items most workers get wrong together (correlated errors, confident and wrong)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(2, size=n_tasks)
    trap = rng.random(n_tasks) < traps
    kinds = rng.choice(["good", "biased", "random"], size=n_workers, p=[0.5, 0.3, 0.2])
    skill = rng.uniform(0.75, 0.95, n_workers)
    records = []
    for t in range(n_tasks):
        for w in rng.choice(n_workers, size=votes, replace=False):
            if trap[t]:
                label = 1 - truth[t] if rng.random() < 0.8 else truth[t]
            elif kinds[w] == "good":
                label = truth[t] if rng.random() < skill[w] else 1 - truth[t]
            elif kinds[w] == "biased":
                label = 1 if rng.random() < 0.7 else truth[t]
            else:
                label = rng.integers(2)
            records.append((f"t{t:06d}", f"w{w}", int(label)))
    return records, truth


def _draws(runs: int, n_gold: int, traps: float, guarantee: str, gold_pick=None):
    """Per draw of `n_gold` gold items: the accepted items' accuracy among 2,000 fresh items (the population,
    near enough; None: nothing accepted), the automatic share, and the score drift test, gold against them.
    `gold_pick(truth, votes_agree, rng)`: which items are gold (default: the first n_gold, a random draw)."""
    out = []
    for seed in range(runs):
        records, truth = _synthetic_crowd(seed, n_gold * 3 + 2000, traps)
        table = VoteTable.from_records(records, [0, 1])
        model, ds = worker_model(table)  # EM on every vote, no gold: the scores never saw a label
        skill = dict(zip(table.worker_names, ds.skills_))
        ordered = {}
        for t, w, label in zip(table.tasks, table.workers, table.labels):
            ordered.setdefault(table.task_names[t], []).append((table.worker_names[w], int(label)))
        tasks = sorted(ordered)
        agree = np.array([max(Counter(v[1] for v in ordered[t]).values()) >= 6 for t in tasks])  # 6 of 7 agree
        ordered = {t: sorted(v, key=lambda vote: -skill[vote[0]]) for t, v in ordered.items()}
        paths = build_paths(model, tasks, ordered, 7)
        pool = np.arange(n_gold * 3)
        gold = gold_pick(agree[pool], np.random.default_rng(seed)) if gold_pick else pool[:n_gold]
        fresh = np.arange(n_gold * 3, len(tasks))
        policy = CascadePolicy([0, 1], 0.95, 0.9, guarantee).fit(paths[gold], truth[gold])
        first, label = paths[fresh].accept(policy.lambda_)
        taken = first >= 0
        accuracy = (label[taken] == truth[fresh][taken]).mean() if taken.any() else None
        drift = score_drift(paths[gold].ease(policy.lambda_), paths[fresh].ease(policy.lambda_))
        out.append((accuracy, taken.mean(), drift))
    return out


@pytest.mark.parametrize("traps", [0.0, 0.03])
def test_the_guarantee_holds_on_the_population_in_simulation(traps):
    """Over many draws of 300 gold items, the accuracy of what a level accepts among 2,000 fresh items
    (the population, near enough) reaches the target at least as often as promised, within noise."""
    target, confidence, runs = 0.95, 0.9, 100
    draws = _draws(runs, 300, traps, "high_probability")
    held = sum(accuracy is None or accuracy >= target for accuracy, _, _ in draws)
    shares = [share for _, share, _ in draws]
    print(f"traps {traps}: held {held}/{runs}, mean automatic share {np.mean(shares):.3f}")
    # Promised: >= 0.9. Allowed: 2.33 binomial standard deviations below it (one-sided 1%).
    assert held >= runs * (confidence - 2.33 * np.sqrt(confidence * (1 - confidence) / runs)), held
    assert np.mean(shares) > (0.5 if traps == 0 else 0.03)  # and it still accepts a useful share


@pytest.mark.parametrize("traps", [0.0, 0.03])
def test_the_expected_guarantee_holds_on_average_in_simulation(traps):
    """guarantee: expected: the error rate among accepted items, averaged over draws of the gold (nothing
    accepted: none), is at most 1 - target, and it accepts more than the high-probability guarantee."""
    draws = _draws(60, 300, traps, "expected")
    error = [0.0 if accuracy is None else 1 - accuracy for accuracy, _, _ in draws]
    accepted = [accuracy for accuracy, _, _ in draws if accuracy is not None]
    print(f"traps {traps}: mean error {np.mean(error):.4f}, mean accepted accuracy {np.mean(accepted):.4f}, "
          f"share {np.mean([s for _, s, _ in draws]):.3f}")
    assert np.mean(error) <= 0.05 + 2.33 * np.std(error) / np.sqrt(len(error))
    assert np.mean(accepted) >= 0.95 - 0.005
    strict = _draws(20, 300, traps, "high_probability")
    assert np.mean([s for _, s, _ in draws[:20]]) > np.mean([s for _, s, _ in strict])


def test_score_drift_flags_gold_picked_among_clear_items_and_rarely_fair_gold():
    def clear(agree, rng):  # nine in ten gold items among those the workers (nearly) all agreed on
        easy = min(270, int(agree.sum()))
        return np.concatenate([rng.choice(np.nonzero(agree)[0], easy, replace=False),
                               rng.choice(np.nonzero(~agree)[0], 300 - easy, replace=False)])

    fair = [drift["flagged"] for _, _, drift in _draws(50, 300, 0.0, "high_probability")]
    biased = [drift["flagged"] for _, _, drift in _draws(20, 300, 0.0, "high_probability", clear)]
    print(f"drift flagged: fair {sum(fair)}/50, clear-picked {sum(biased)}/20")
    assert sum(fair) <= 3 and sum(biased) >= 16


def test_futility_never_stops_an_item_that_every_vote_would_accept():
    records, truth = _synthetic_crowd(7, 600)
    table = VoteTable.from_records(records, [0, 1])
    model, _ = worker_model(table)
    ordered = {}
    for t, w, label in zip(table.tasks, table.workers, table.labels):
        ordered.setdefault(table.task_names[t], []).append((table.worker_names[w], int(label)))
    paths = build_paths(model, sorted(ordered), ordered, 7)
    for lam in np.quantile(paths.score[paths.active], [0.2, 0.5, 0.8, 0.95]):
        first, _ = paths.accept(lam)
        used = paths.votes_used(lam, first)
        stopped_early = (first < 0) & (used < paths.active.sum(axis=1))
        assert stopped_early.any()  # futility saves votes here...
        for s in range(paths.n_stages):  # ...and never stops an item that a later vote would have accepted
            futile = paths.futile(s, lam)
            assert not (futile & (first > s)).any()
        assert (used[first >= 0] == first[first >= 0] + 1).all()


def test_policy_uses_later_stages_when_the_first_is_not_enough():
    rng = np.random.default_rng(2)
    n = 600
    truth = rng.integers(2, size=n)
    # Stage 0: weak (70% right, confidence uninformative); stage 1: strong and confident.
    s0_pred = np.where(rng.random(n) < 0.7, truth, 1 - truth)
    s1_pred = np.where(rng.random(n) < 0.995, truth, 1 - truth)
    paths = paths_of((s0_pred, np.full(n, 0.7)), (s1_pred, np.full(n, 0.999)))
    policy = CascadePolicy([0, 1], 0.95, 0.9).fit(paths[np.arange(n // 2)], truth[: n // 2])
    first, _ = paths.accept(policy.lambda_)
    assert 0.7 < policy.level <= 0.999
    assert (first == 1).mean() > 0.95


@needs_datasets
def test_replay_command_reports_the_figures():
    result = json.loads(labeler("replay", DATASETS / "rte" / "labels.csv", "--gold", DATASETS / "rte" / "gold.csv",
                                "--target-accuracy", "0.95", "--seed", "3", "--json").stdout)
    for key in ("auto_fraction", "auto_accuracy", "accuracy_all", "votes_used", "votes_available",
                "oracle_auto_fraction", "oracle_ratio", "ds_accuracy"):
        assert key in result
    assert result["votes_used"] < result["votes_available"] == 8000  # every gold item measured once
    assert 0 < result["auto_fraction"] <= result["oracle_auto_fraction"] <= 1
    assert result["oracle_ratio"] == pytest.approx(result["auto_fraction"] / result["oracle_auto_fraction"], abs=1e-3)
    # With stop_when_futile off, items sent to review buy their remaining votes: more votes, and on
    # rte (ten votes an item) the aggregate of every vote for them.
    assert result["votes_used"] < result["finished_votes_used"] < result["votes_available"]
    assert result["accuracy_all"] < result["finished_accuracy_all"]


@needs_datasets
def test_replay_out_of_sample_hides_gold_and_scores_what_it_accepted_there():
    args = ("replay", DATASETS / "product" / "labels.csv", "--gold", DATASETS / "product" / "gold.csv",
            "--gold-share", "0.3", "--order", "random", "--seed", "1", "--json")
    for guarantee in ("high_probability", "expected"):
        result = json.loads(labeler(*args, "--guarantee", guarantee).stdout)
        assert result["calibration_items"] + result["new_items"] == 4125 and result["calibration_items"] == 1238
        assert result["accepted"] == round(result["auto_fraction"] * result["new_items"])
        assert result["auto_accuracy"] == pytest.approx(1 - result["accepted_wrong"] / result["accepted"], abs=1e-4)
        assert set(result["score_drift"]) == {"statistic", "p_value", "flagged"} and not result["score_drift"]["flagged"]
        assert result["gold_support"][0] >= 40 and result["guarantee"] == guarantee


@needs_datasets
def test_the_gold_plan_from_part_of_the_gold_predicts_what_more_gold_then_measures():
    from routing.aggregate import read_gold, read_votes
    from routing.plan import gold_plan
    from routing.replay import holdout, prepare

    records, gold = read_votes(DATASETS / "product" / "labels.csv"), read_gold(DATASETS / "product" / "gold.csv")
    predictions, measured = [], []
    for seed in range(4):
        prep = prepare(records, gold, seed, "random")
        n = len(prep.tasks)
        calib = np.zeros(n, bool)
        calib[prep.rng.permutation(n)[:int(round(0.3 * n))]] = True
        policy = CascadePolicy(prep.label_names, 0.95, 0.9).fit(prep.paths[calib], prep.truth[calib])
        paths, truth = policy.gold_
        [row] = gold_plan(paths, truth, prep.label_names, 0.95, 0.9, "high_probability", sizes=[int(0.8 * n)], seed=seed)
        predictions.append(row["auto_fraction"])
        measured.append(holdout(records, gold, 0.95, 0.9, seed, 0.8, "random")["auto_fraction"])
    assert abs(np.mean(predictions) - np.mean(measured)) <= 0.10, (predictions, measured)


def test_per_label_corrections_read_a_skewed_models_probabilities_out_of_fold():
    """A model that leans toward one label answers it for most items, but its probabilities still rank
    the right label higher than the others do: the correction, fitted without the item's own fold, reads it."""
    from routing.project import FOLDS, ProjectPolicy, Stage, corrected, fit_corrections, fold_of

    rng = np.random.default_rng(0)
    labels = ["a", "b", "c", "d"]
    policy = ProjectPolicy([Stage("gemma", 1, "v1")], labels, bands={})
    truth, votes = {}, {}
    for item in range(1, 401):
        k = int(rng.integers(4))
        logits = rng.normal(0, 0.5, 4) + np.array([2.0, 0, 0, 0])  # leans toward "a"
        logits[k] += 1.5  # ...but the right label stands out against the rest
        p = np.exp(logits) / np.exp(logits).sum()
        votes[item] = {0: (labels[int(p.argmax())], dict(zip(labels, p.round(6).tolist())))}
        truth[item] = k
    raw = np.mean([labels.index(votes[i][0][0]) == truth[i] for i in votes])
    fit_corrections(policy, votes, truth)
    assert set(policy.corrections) == {frozenset({f}) for f in range(FOLDS)} | \
        {frozenset({f, g}) for f in range(FOLDS) for g in range(f + 1, FOLDS)}
    read = corrected(policy, votes, list(votes), lambda i: frozenset({fold_of(i)}))
    fixed = np.mean([labels.index(read[i][0][0]) == truth[i] for i in votes])
    assert raw < 0.55 and fixed > raw + 0.2, (raw, fixed)
    assert abs(sum(read[1][0][1].values()) - 1) < 1e-6 and votes[1][0] != read[1][0]  # the store's vote untouched
    from sklearn.linear_model import LogisticRegression

    for f in range(FOLDS):  # each correction was fitted on exactly the items outside the folds it leaves out
        outside = [i for i in votes if fold_of(i) != f]
        x = np.log(np.clip([[votes[i][0][1][k] for k in labels] for i in outside], 1e-9, None))
        again = LogisticRegression(max_iter=2000).fit(x, [truth[i] for i in outside])
        assert np.allclose(again.coef_, policy.corrections[frozenset({f})][0].coef_)


@needs_datasets
def test_replay_decides_every_item_of_the_table_gold_or_not(tmp_path):
    import csv

    rows = list(csv.DictReader(open(DATASETS / "rte" / "gold.csv", encoding="utf-8")))
    half = tmp_path / "gold.csv"
    with half.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["task", "label"])
        writer.writerows([r["task"], r["label"]] for r in rows[::2])  # the other half: new items
    out = tmp_path / "items.csv"
    labeler("replay", DATASETS / "rte" / "labels.csv", "--gold", half, "--items", out, "--seed", "1")
    decided = list(csv.DictReader(open(out, encoding="utf-8")))
    assert len(decided) == 800 and {r["task"] for r in decided} == {r["task"] for r in rows}
    assert {r["state"] for r in decided} == {"auto", "review"} and all(0 <= float(r["confidence"]) <= 1 for r in decided)
    truth = {r["task"]: r["label"] for r in rows}
    new = [r for r in decided if r["task"] not in {g["task"] for g in rows[::2]} and r["state"] == "auto"]
    assert len(new) > 200 and np.mean([r["label"] == truth[r["task"]] for r in new]) >= 0.93  # as certified, near enough
