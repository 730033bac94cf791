"""What-if on historical crowd data: how far would the cascade have got with fewer votes?

Each recorded vote is treated as purchasable. The gold items are halved by seed: the
calibration half fits the worker model and the cascade policy (itself split: a part fits
worker confusions and calibration, the rest tests lambda); on the other half each item buys
its votes one at a time in a random order until the cascade accepts it or its votes run out.
"""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np

from routing.cascade import CascadePolicy, ConfusionModel, StageScores, split_gold

FOLDS = 5


def _orders(tasks: list, votes_by_task: dict, rng) -> dict:
    return {t: [votes_by_task[t][i] for i in rng.permutation(len(votes_by_task[t]))] for t in tasks}


def _stage_scores(model: ConfusionModel, tasks: list, ordered: dict, n_stages: int, K: int) -> list[StageScores]:
    stages = []
    for s in range(n_stages):
        post = np.full((len(tasks), K), 1.0 / K)
        active = np.zeros(len(tasks), bool)
        for i, t in enumerate(tasks):
            votes = ordered[t][: s + 1]
            post[i] = model.posterior(votes)
            active[i] = len(ordered[t]) > s
        stages.append(StageScores.from_posteriors(post, active))
    return stages


def _fit_model(tasks, ordered_all: dict, gold_idx: dict, K: int) -> ConfusionModel:
    workers, observed, truth = [], [], []
    for t in tasks:
        for w, lab in ordered_all[t]:
            workers.append(w)
            observed.append(lab)
            truth.append(gold_idx[t])
    return ConfusionModel(K).fit(workers, np.array(observed, np.int64), np.array(truth, np.int64))


def replay(records: list[tuple], gold: dict, target: float, confidence: float = 0.9, seed: int = 0) -> dict:
    """`records`: (task, worker, label); `gold`: task -> label. Returns the replay's figures."""
    started = time.perf_counter()
    label_names = sorted({r[2] for r in records} | set(gold.values()), key=str)
    index = {name: k for k, name in enumerate(label_names)}
    K = len(label_names)
    votes_by_task = defaultdict(list)
    for task, worker, label in records:
        votes_by_task[task].append((worker, index[label]))
    tasks = sorted((t for t in gold if t in votes_by_task), key=str)
    if len(tasks) < 20:
        raise ValueError("replay needs at least 20 gold items with votes")
    gold_idx = {t: index[gold[t]] for t in tasks}
    rng = np.random.default_rng(seed)
    halves = rng.permutation(len(tasks))
    calib = [tasks[i] for i in sorted(halves[: len(tasks) // 2])]
    test = [tasks[i] for i in sorted(halves[len(tasks) // 2:])]
    ordered = _orders(tasks, votes_by_task, rng)
    n_stages = max(len(v) for v in votes_by_task.values())

    # The calibration half: a fit part (worker model, calibrators) and a part that tests lambda.
    fit_i, check_i = split_gold(len(calib), seed)
    fit, check = [calib[i] for i in fit_i], [calib[i] for i in check_i]
    model = _fit_model(fit, ordered, gold_idx, K)
    # Calibrators learn from out-of-fold posteriors, so they see honest scores, like new items'.
    fold = np.arange(len(fit)) % FOLDS
    rng.shuffle(fold)
    oof = [StageScores(np.zeros(len(fit), int), np.zeros(len(fit)), np.zeros(len(fit), bool)) for _ in range(n_stages)]
    for f in range(FOLDS):
        inside = [t for t, g in zip(fit, fold) if g != f]
        held = [i for i, g in enumerate(fold) if g == f]
        if not held or not inside:
            continue
        fold_model = _fit_model(inside, ordered, gold_idx, K)
        stages = _stage_scores(fold_model, [fit[i] for i in held], ordered, n_stages, K)
        for s, stage in enumerate(stages):
            oof[s].predicted[held], oof[s].score[held], oof[s].active[held] = stage.predicted, stage.score, stage.active
    policy = CascadePolicy(label_names, target, confidence).fit(
        oof, [gold_idx[t] for t in fit],
        _stage_scores(model, check, ordered, n_stages, K), [gold_idx[t] for t in check],
    )

    # The test half: buy votes until accepted, or until they run out (then: review).
    test_stages = _stage_scores(model, test, ordered, n_stages, K)
    accepted_at, label = policy.simulate(test_stages, policy.lambda_)
    truth = np.array([gold_idx[t] for t in test])
    available = np.array([len(ordered[t]) for t in test])
    used = np.where(accepted_at >= 0, accepted_at + 1, available)
    auto = accepted_at >= 0
    final = test_stages[-1].predicted  # the aggregate after every vote
    label_all = np.where(auto, label, final)
    return {
        "seed": seed,
        "target_accuracy": target,
        "confidence": confidence,
        "test_items": len(test),
        "auto_fraction": round(float(auto.mean()), 4),
        "auto_accuracy": round(float((label[auto] == truth[auto]).mean()), 4) if auto.any() else None,
        "accuracy_all": round(float((label_all == truth).mean()), 4),
        "votes_used": int(used.sum()),
        "votes_available": int(available.sum()),
        "lambda": policy.lambda_,
        "seconds": round(time.perf_counter() - started, 3),
    }
