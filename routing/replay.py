"""What-if on historical crowd data: how far would the cascade have got with fewer votes?

Each recorded vote is treated as purchasable. The worker model is Dawid-Skene's EM on the
votes of every item, gold labels unseen, so every gold item can test the acceptance level.
The gold is cross-fitted: split into `folds` parts by seed; each part in turn stands for new
items while the rest calibrates (each gold item is measured once, with four fifths of the gold
calibrating, as a user's own gold would). A new item buys its votes one at a time, the most
skilled worker first (skills from the EM; `order="random"` buys them in a random order),
until the cascade accepts it or no remaining vote could (then it goes to review).

Figures: the automatic share and its accuracy, accuracy over all items (those sent to review
taking the aggregate of the votes they bought), votes used, the same two with
`stop_when_futile` off (items sent to review buy every remaining vote; nothing accepted changes),
and the oracle: Dawid-Skene with
every vote, items sorted by posterior, the largest share still at least `target` right in
hindsight (no method can beat it).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from routing.calibration import probability, score_drift
from routing.cascade import CascadePolicy, ConfusionModel, Paths, build_paths
from routing.dawid_skene import DawidSkene
from routing.plan import plan
from routing.votes import VoteTable

FOLDS = 5


def worker_model(table: VoteTable) -> tuple[ConfusionModel, DawidSkene]:
    """Dawid-Skene on every vote (no gold), its posteriors turned into shrunk confusion matrices."""
    ds = DawidSkene().fit(table)
    model = ConfusionModel(table.n_labels).fit(
        [table.worker_names[w] for w in table.workers], table.labels, ds.probas_[table.tasks], priors=ds.priors_)
    return model, ds


def oracle_share(confidence: np.ndarray, predicted: np.ndarray, truth: np.ndarray, target: float) -> float:
    """The largest share of items, most confident first, whose accuracy is still >= target.

    Cuts fall only between different confidences: a level cannot split items that tie."""
    order = np.argsort(-confidence, kind="stable")
    accuracy = np.cumsum(predicted[order] == truth[order]) / np.arange(1, len(order) + 1)
    ends = np.append(confidence[order][1:] != confidence[order][:-1], True)  # the last item of each tie
    passing = np.nonzero((accuracy >= target) & ends)[0]
    return float((passing.max() + 1) / len(order)) if len(passing) else 0.0


@dataclass
class Prepared:
    """A crowd table ready to replay: every gold item's votes in the order they are bought, its paths."""

    label_names: list
    tasks: list[str]
    truth: np.ndarray
    paths: Paths
    ds: DawidSkene
    in_table: list[int]
    rng: np.random.Generator
    others: list[str]  # the items without gold, and their paths: new items
    other_paths: Paths

    def oracle(self, target: float) -> float:
        every = self.ds.probas_[self.in_table]
        return oracle_share(self.ds.log_odds_[self.in_table], every.argmax(axis=1), self.truth, target)


def prepare(records: list[tuple], gold: dict, seed: int, order: str) -> Prepared:
    label_names = sorted({r[2] for r in records} | set(gold.values()), key=str)
    table = VoteTable.from_records(records, label_names)
    index = {str(t): i for i, t in enumerate(table.task_names)}
    tasks = sorted((str(t) for t in gold if str(t) in index), key=str)
    if len(tasks) < 20:
        raise ValueError("replay needs at least 20 gold items with votes")
    if order not in ("skill", "random"):
        raise ValueError(f"unknown order {order!r}; use skill or random")
    gold = {str(t): label for t, label in gold.items()}
    truth = np.array([label_names.index(gold[t]) for t in tasks])
    model, ds = worker_model(table)
    skill = dict(zip(table.worker_names, ds.skills_))
    by_task = defaultdict(list)
    for t, w, label in zip(table.tasks, table.workers, table.labels):
        by_task[table.task_names[t]].append((table.worker_names[w], int(label)))
    rng = np.random.default_rng(seed)
    ordered = {}
    for t in tasks:
        votes = [by_task[t][i] for i in rng.permutation(len(by_task[t]))]
        ordered[t] = sorted(votes, key=lambda v: -skill[v[0]]) if order == "skill" else votes
    others = sorted(set(by_task) - set(tasks), key=str)
    for t in others:
        votes = [by_task[t][i] for i in rng.permutation(len(by_task[t]))]
        ordered[t] = sorted(votes, key=lambda v: -skill[v[0]]) if order == "skill" else votes
    n_stages = max(len(v) for v in ordered.values())
    return Prepared(label_names, tasks, truth, build_paths(model, tasks, ordered, n_stages), ds,
                    [index[t] for t in tasks], rng, others, build_paths(model, others, ordered, n_stages))


def holdout(records: list[tuple], gold: dict, target: float, confidence: float = 0.9, seed: int = 0,
            gold_share: float = 0.5, order: str = "random", guarantee: str = "high_probability",
            calibration: set | None = None, with_plan: bool = False) -> dict:
    """The guarantee measured out of sample: the cascade calibrates on a share of the gold (`calibration`,
    or a random `gold_share` of it) and labels the rest as new items, whose gold then scores what it
    accepted. A draw of the gold, as the guarantee counts over; `order`: random buys votes as a live
    system could (skill order knows every worker's skill from votes it has not bought yet)."""
    started = time.perf_counter()
    prep = prepare(records, gold, seed, order)
    tasks, truth, paths = prep.tasks, prep.truth, prep.paths
    if calibration is None:
        calib = np.zeros(len(tasks), bool)
        calib[prep.rng.permutation(len(tasks))[:max(1, int(round(gold_share * len(tasks))))]] = True
    else:
        calib = np.array([t in calibration for t in tasks])
    new = ~calib
    policy = CascadePolicy(prep.label_names, target, confidence, guarantee).fit(paths[calib], truth[calib])
    first, label = paths[new].accept(policy.lambda_)
    auto = first >= 0
    right = label[auto] == truth[new][auto]
    used = paths[new].votes_used(policy.lambda_, first)
    drift = score_drift(paths[calib].ease(policy.lambda_), paths[new].ease(policy.lambda_))
    extra = plan(policy) if with_plan else {}
    return extra | {
        "seed": seed, "order": order, "guarantee": guarantee, "target_accuracy": target, "confidence": confidence,
        "calibration_items": int(calib.sum()), "new_items": int(new.sum()),
        "auto_fraction": round(float(auto.mean()), 4),
        "auto_accuracy": round(float(right.mean()), 4) if auto.any() else None,
        "accepted": int(auto.sum()), "accepted_wrong": int((~right).sum()),
        "votes_used": int(used.sum()), "votes_available": int(paths[new].active.sum()),
        "level": policy.level, "gold_support": policy.support_,
        "oracle_auto_fraction": round(prep.oracle(target), 4),
        "score_drift": drift,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _decided(policy: CascadePolicy, paths: Paths, tasks: list[str]) -> list[tuple]:
    """(task, label, auto|review, calibrated confidence) as a run would decide these items."""
    first, _ = paths.accept(policy.lambda_)
    stage = np.where(first >= 0, first, np.maximum(paths.votes_used(policy.lambda_, first), 1) - 1)
    rows = np.arange(len(tasks))
    predicted, score = paths.predicted[rows, stage], paths.score[rows, stage]
    calibrated = np.array([policy.calibrated(int(s), predicted[i:i + 1], score[i:i + 1])[0] for i, s in enumerate(stage)]) \
        if len(tasks) else np.array([])
    return [(t, policy.label_names[int(predicted[i])], "auto" if first[i] >= 0 else "review", round(float(calibrated[i]), 4))
            for i, t in enumerate(tasks)]


def replay(records: list[tuple], gold: dict, target: float, confidence: float = 0.9, seed: int = 0,
           order: str = "skill", folds: int = FOLDS, decisions: list | None = None) -> dict:
    """`records`: (task, worker, label); `gold`: task -> label. Returns the replay's figures. `decisions`, when
    given, receives (task, label, state, confidence) for every item of the table: gold items as their
    fold decided them, the others as new items under the level certified on all the gold."""
    started = time.perf_counter()
    prep = prepare(records, gold, seed, order)
    label_names, tasks, truth, paths, ds, rng = prep.label_names, prep.tasks, prep.truth, prep.paths, prep.ds, prep.rng

    fold = rng.permutation(np.arange(len(tasks)) % folds)
    auto, label, used = np.zeros(len(tasks), bool), np.full(len(tasks), -1), np.zeros(len(tasks), int)
    levels, held = [], []
    for f in range(folds):
        test = np.nonzero(fold == f)[0]
        policy = CascadePolicy(label_names, target, confidence).fit(paths[fold != f], truth[fold != f])
        first, label[test] = paths[test].accept(policy.lambda_)
        auto[test] = first >= 0
        used[test] = paths[test].votes_used(policy.lambda_, first)
        levels.append(policy.lambda_)
        taken = test[auto[test]]
        held.append(not len(taken) or float((label[taken] == truth[taken]).mean()) >= target)
    if decisions is not None:
        for f in range(folds):  # the gold, as its folds decided it
            test = np.nonzero(fold == f)[0]
            policy = CascadePolicy(label_names, target, confidence).fit(paths[fold != f], truth[fold != f])
            decisions += _decided(policy, paths[test], [tasks[i] for i in test])
        decisions += _decided(CascadePolicy(label_names, target, confidence).fit(paths, truth), prep.other_paths,
                              prep.others)

    def final(bought: np.ndarray) -> np.ndarray:
        """Accepted items' labels; items sent to review take the aggregate of the votes they bought."""
        return np.where(auto, label, paths.predicted[np.arange(len(tasks)), np.maximum(bought, 1) - 1])

    every_vote = paths.active.sum(axis=1)  # with stop_when_futile off, review items buy them all
    every = ds.probas_[prep.in_table]
    oracle = prep.oracle(target)
    auto_fraction = float(auto.mean())
    return {
        "seed": seed,
        "order": order,
        "target_accuracy": target,
        "confidence": confidence,
        "test_items": len(tasks),
        "folds": folds,
        "auto_fraction": round(auto_fraction, 4),
        "auto_accuracy": round(float((label[auto] == truth[auto]).mean()), 4) if auto.any() else None,
        "accuracy_all": round(float((final(used) == truth).mean()), 4),
        "ds_accuracy": round(float((every.argmax(axis=1) == truth).mean()), 4),
        "votes_used": int(used.sum()),
        "votes_available": int(paths.active.sum()),
        "finished_accuracy_all": round(float((final(every_vote) == truth).mean()), 4),  # stop_when_futile off
        "finished_votes_used": int(np.where(auto, used, every_vote).sum()),
        "held_folds": round(float(np.mean(held)), 4),  # folds whose accepted items met the target
        "oracle_auto_fraction": round(oracle, 4),
        "oracle_ratio": round(auto_fraction / oracle, 4) if oracle else None,
        "lambda": [None if not np.isfinite(lam) else round(float(probability(lam)), 6) for lam in levels],
        "seconds": round(time.perf_counter() - started, 3),
    }
