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

from routing.cascade import fit_cascade, stage_scores


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
    # The order each item's votes would be bought in.
    ordered = {t: [votes_by_task[t][i] for i in rng.permutation(len(votes_by_task[t]))] for t in tasks}
    n_stages = max(len(v) for v in votes_by_task.values())

    model, policy = fit_cascade(calib, ordered, gold_idx, label_names, n_stages, target, confidence, seed)

    # The test half: buy votes until accepted, or until they run out (then: review).
    test_stages = stage_scores(model, test, ordered, n_stages, K)
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
