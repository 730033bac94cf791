"""The cascade: ask annotators (or buy votes) one stage at a time; stop when the label can be
trusted, or as soon as it never could be.

A ConfusionModel gives every vote a log-likelihood per true label (per worker, shrunk toward
everyone's pooled matrix); an item's posterior after each stage follows (Paths). An item is
accepted at the first stage whose posterior's top probability reaches one level, lambda, shared
by all stages and labels; an item that no remaining stage could lift to lambda stops there and
goes to review (futility: it would not have been accepted with every vote either, so no
decision changes, only the votes it would have wasted are saved). A CascadePolicy also
calibrates, per stage and predicted label, that confidence into the probability of being
right (Platt), which is what decisions report.

Lambda is chosen on gold whose scores came from a model that never saw its labels, by
fixed-sequence testing over coverage (routing.calibration.choose_level): with probability at
least `confidence`, the accuracy of automatically accepted items is at least
`target_accuracy`, as long as new items come from the same distribution as the gold. One
lambda rather than one per label: splitting the error budget over labels and stages cost more
of the automatic share than it bought at the gold sizes we have.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from routing.calibration import Calibrator, choose_level, choose_level_expected, probability
from routing.votes import softmax_rows


class ConfusionModel:
    """Per-worker confusion matrices P(vote | true label), shrunk toward the pooled matrix.

    Fitted on votes whose true labels are known (gold: one-hot) or believed (Dawid-Skene's
    posteriors: soft). Workers with few votes borrow strength from everyone's (`shrinkage`
    pseudo-votes); workers never seen get the pooled matrix. No cell is zero, so no single
    vote can veto a label."""

    def __init__(self, n_labels: int, shrinkage: float = 1.0, smoothing: float = 0.5):
        self.n_labels = n_labels
        self.shrinkage = shrinkage
        self.smoothing = smoothing

    def fit(self, workers: list, observed: np.ndarray, truth: np.ndarray, priors: np.ndarray | None = None) -> "ConfusionModel":
        """`truth`: a label index per vote, or an (n_votes x K) matrix of probabilities."""
        K = self.n_labels
        truth = np.asarray(truth)
        soft = truth if truth.ndim == 2 else np.eye(K)[truth.astype(np.int64)]
        names = sorted(set(workers), key=str)
        self.index_ = {w: i for i, w in enumerate(names)}
        w_idx = np.array([self.index_[w] for w in workers], dtype=np.int64)
        counts = np.zeros((len(names), K, K))  # [worker, true, observed]
        np.add.at(counts, (w_idx, slice(None), np.asarray(observed, np.int64)), soft)
        pooled = counts.sum(axis=0) + self.smoothing
        self.pooled_ = pooled / pooled.sum(axis=1, keepdims=True)
        conf = counts + self.shrinkage * self.pooled_[None]
        self.log_errors_ = np.log(conf / conf.sum(axis=2, keepdims=True))
        self.log_pooled_ = np.log(self.pooled_)
        if priors is None:
            priors = np.bincount(truth, minlength=K) + 1.0 if truth.ndim == 1 else soft.sum(axis=0) + 1.0
        self.log_priors_ = np.log(np.asarray(priors, float) / np.sum(priors))
        return self

    def log_errors(self, worker) -> np.ndarray:
        """log P(observed | true) for one worker: a K x K matrix [true, observed]."""
        i = self.index_.get(worker)
        return self.log_pooled_ if i is None else self.log_errors_[i]

    def vote_log_likelihood(self, worker, observed: int) -> np.ndarray:
        """log P(this vote | true label) for each true label."""
        return self.log_errors(worker)[:, observed]

    def posterior(self, votes: list[tuple]) -> np.ndarray:
        """P(true label | votes) for one task's (worker, label index) votes."""
        logits = self.log_priors_.copy()
        for worker, observed in votes:
            logits += self.vote_log_likelihood(worker, observed)
        return softmax_rows(logits[None])[0]

    def reach(self, workers: list) -> np.ndarray:
        """The most one vote by any of `workers` can move logit_j - logit_k toward label k: a K x K
        matrix [j, k] of the least change (never above 0: a vote may also be an abstention)."""
        key = tuple(workers)
        cache = self.__dict__.setdefault("_reach", {})
        if key not in cache:
            out = np.zeros((self.n_labels, self.n_labels))
            for worker in workers:
                e = self.log_errors(worker)  # [true, observed]
                out = np.minimum(out, (e[:, None, :] - e[None, :, :]).min(axis=2))
            cache[key] = out
        return cache[key]


class Scored:
    """What the policy reads of items asked stage by stage, whatever an answer is: `score[i, s]` (the
    log-odds that item i's answer after stage s is right; -inf where the stage was not reached),
    `predicted[i, s]` (that answer, an index) and `active[i, s]` (item i reached stage s). A task type's
    paths (Paths for one label, routing.label_sets for label sets) add `futile`."""

    score: np.ndarray
    predicted: np.ndarray
    active: np.ndarray

    def futile(self, s: int, lam: float) -> np.ndarray:
        raise NotImplementedError

    def confidence(self, s: int) -> np.ndarray:
        """The posterior's top probability at stage s."""
        return probability(self.score[:, s])

    @property
    def n_stages(self) -> int:
        return self.active.shape[1]

    def best(self) -> np.ndarray:
        """Each item's highest score at any stage: it is accepted at level lam exactly when best >= lam."""
        return self.score.max(axis=1) if self.n_stages else np.full(len(self.active), -np.inf)

    def accept(self, lam: float) -> tuple[np.ndarray, np.ndarray]:
        """The stage at which each item is accepted (-1: never) and its predicted label then."""
        taken = self.score >= lam
        any_ = taken.any(axis=1)
        first = np.where(any_, taken.argmax(axis=1), -1)
        label = np.where(any_, self.predicted[np.arange(len(first)), np.maximum(first, 0)], -1)
        return first, label

    def ease(self, lam: float) -> np.ndarray:
        """How easy the cascade found each item, as one number to rank by: accepted at an earlier stage is
        easier than at a later one, which is easier than sent to review, late before early (futile at once
        is hardest); within each, by the score where it stopped. Gold and new items ranked by the same rule,
        whatever votes the new ones were spared."""
        first, _ = self.accept(lam)
        used = self.votes_used(lam, first)
        S = max(self.n_stages, 1)
        outcome = np.where(first >= 0, 2 * S - first, used)  # accepted: S+1..2S; review: 1..S
        stopped = self.score[np.arange(len(used)), np.maximum(used, 1) - 1] if self.n_stages else np.zeros(len(used))
        return outcome + probability(np.clip(stopped, -50, 50)) * 0.999

    def votes_used(self, lam: float, first: np.ndarray) -> np.ndarray:
        """Stages asked per item: up to its acceptance, or up to the stage after which it was futile."""
        used = np.where(first >= 0, first + 1, self.active.sum(axis=1))
        open_ = first < 0
        for s in range(self.n_stages):
            stop = open_ & self.active[:, s] & self.futile(s, lam)
            used[stop] = s + 1
            open_ &= ~stop
        return used


@dataclass
class Paths(Scored):
    """n items asked stage by stage, one label each: the unnormalised log posterior after each stage.

    An item's score at a stage is the log-odds of its top label (-inf where the stage was not
    reached): the posterior's top probability, without the rounding to 1.0 that would tie the
    most confident items. `active[i, s]`: item i reached stage s (a vote there, or an abstention).
    `reach[i or 0, s]`: the most a vote at stage s could move each logit difference (see
    ConfusionModel.reach), for the futility bound; it broadcasts over items when shared."""

    logits: np.ndarray  # (n, S, K)
    active: np.ndarray  # (n, S)
    reach: np.ndarray  # (n or 1, S, K, K)

    def __post_init__(self):
        self.predicted = self.logits.argmax(axis=2)
        top = np.take_along_axis(self.logits, self.predicted[..., None], axis=2)[..., 0]
        others = np.where(np.arange(self.logits.shape[2]) == self.predicted[..., None], -np.inf, self.logits)
        with np.errstate(divide="ignore"):
            self.score = np.where(self.active, top - _logsumexp(others, axis=2), -np.inf)

    def __getitem__(self, rows) -> "Paths":
        reach = self.reach if len(self.reach) == 1 else self.reach[rows]
        return Paths(self.logits[rows], self.active[rows], reach)

    def futile(self, s: int, lam: float) -> np.ndarray:
        """Items that no later stage could take to lam, whatever its votes: an upper bound on the
        posterior of each label after each later stage, from the most each vote could move it."""
        n, S, K = self.logits.shape
        if s + 1 >= S or not np.isfinite(lam):
            return np.ones(n, bool)
        L = self.logits[:, s]  # (n, K)
        gap = L[:, :, None] - L[:, None, :]  # [i, j, k]: logit_j - logit_k now
        moves = np.cumsum(np.broadcast_to(self.reach[:, s + 1:], (n, S - s - 1, K, K)), axis=1)
        shifted = gap[:, None] + moves  # (n, later stages, j, k)
        shifted[:, :, np.arange(K), np.arange(K)] = -np.inf  # log-odds of k: minus the logsumexp over j != k
        with np.errstate(divide="ignore"):
            upper = -_logsumexp(shifted, axis=2)  # (n, later stages, k)
        return upper.max(axis=(1, 2)) < lam


def build_paths(model: ConfusionModel, tasks: list, ordered: dict, n_stages: int,
                stage_workers: list[list] | None = None) -> Paths:
    """Paths for `tasks` under one model. `ordered[task]` lists its votes by stage: (worker, label
    index), or None where that stage's worker abstained (no information, but the stage was reached).

    The futility bound needs who may vote at each later stage: `stage_workers[s]` (the same for
    every task: an annotator's confidence bands), or, without it, the worker of each recorded vote."""
    K, n = model.n_labels, len(tasks)
    rows, stages, workers, observed = [], [], [], []
    active = np.zeros((n, n_stages), bool)
    for i, t in enumerate(tasks):
        for s, vote in enumerate(ordered[t][:n_stages]):
            active[i, s] = True
            if vote is not None:
                rows.append(i), stages.append(s), workers.append(vote[0]), observed.append(vote[1])
    unknown = len(model.index_)  # workers the model never saw get the pooled matrix
    w = np.array([model.index_.get(x, unknown) for x in workers], dtype=np.int64)
    errors = np.concatenate([model.log_errors_, model.log_pooled_[None]])
    steps = np.zeros((n, n_stages, K))
    steps[np.array(rows, np.int64), np.array(stages, np.int64)] = errors[w, :, np.array(observed, np.int64)]
    logits = model.log_priors_ + np.cumsum(steps, axis=1)
    if stage_workers is not None:
        reach = np.stack([model.reach(stage_workers[s]) for s in range(n_stages)])[None] if n_stages else \
            np.zeros((1, 0, K, K))
    else:
        per_worker = np.stack([model.reach([x]) for x in model.index_] + [model.reach([None])])
        reach = np.zeros((n, n_stages, K, K))
        reach[np.array(rows, np.int64), np.array(stages, np.int64)] = per_worker[w]
    return Paths(logits, active, reach)


GUARANTEES = ("high_probability", "expected")


class CascadePolicy:
    """`guarantee`: high_probability (accepted accuracy >= target with probability >= confidence over
    draws of the gold: fixed-sequence testing) or expected (accepted accuracy >= target on average over
    draws of the gold: conformal selection with Benjamini-Hochberg; `confidence` is not used)."""

    def __init__(self, label_names: list, target: float, confidence: float, guarantee: str = "high_probability"):
        if guarantee not in GUARANTEES:
            raise ValueError(f"unknown guarantee {guarantee!r}; use {' or '.join(GUARANTEES)}")
        self.label_names = list(label_names)
        self.target = target
        self.delta = 1.0 - confidence
        self.guarantee = guarantee

    def fit(self, paths: Paths, truth) -> "CascadePolicy":
        """Calibrators and lambda from gold paths whose scores never saw the gold labels."""
        truth = np.asarray(truth)
        self.gold_ = (paths, truth)  # scored gold: the calibrators are fitted on it when first needed

        def evaluate(lam):
            first, label = paths.accept(lam)
            taken = first >= 0
            return int(taken.sum()), int((label[taken] == truth[taken]).sum())

        if self.guarantee == "expected":  # bound_: the level's estimated accuracy, not a bound
            self.lambda_, self.bound_ = choose_level_expected(paths.best(), evaluate, self.target, paths.score[paths.active])
        else:
            self.lambda_, self.bound_ = choose_level(paths.best(), evaluate, self.target, self.delta,
                                                     paths.score[paths.active])
        if np.isfinite(self.lambda_):  # never down to a posterior that says nothing (1/K)
            self.lambda_ = float(max(self.lambda_, -np.log(max(len(self.label_names) - 1, 1)) + 1e-9))
        first, label = paths.accept(self.lambda_)
        taken = first >= 0
        self.support_ = (int(taken.sum()), int((label[taken] != truth[taken]).sum()))  # gold accepted, and wrong
        self.n_test_ = len(truth)
        return self

    @cached_property
    def calibrators_(self) -> list:
        paths, truth = self.gold_
        calibrators = []
        for s in range(paths.n_stages):
            mask = paths.active[:, s]
            predicted, score = paths.predicted[:, s], paths.score[:, s]
            correct = predicted == truth
            pooled = Calibrator().fit(score[mask], correct[mask])
            per_label = {}
            for k in range(len(self.label_names)):
                m = mask & (predicted == k)
                if m.sum() >= MIN_PER_LABEL and 0 < correct[m].mean() < 1:
                    per_label[k] = Calibrator().fit(score[m], correct[m])
            calibrators.append((pooled, per_label))
        return calibrators

    def calibrated(self, s: int, predicted: np.ndarray, score: np.ndarray) -> np.ndarray:
        pooled, per_label = self.calibrators_[min(s, len(self.calibrators_) - 1)]
        out = pooled.predict(score)
        for k, calibrator in per_label.items():
            m = predicted == k
            if m.any():
                out[m] = calibrator.predict(score[m])
        return out

    @property
    def level(self) -> float | None:
        """Lambda as the posterior probability an item needs (None: nothing is accepted)."""
        return float(probability(self.lambda_)) if np.isfinite(self.lambda_) else None

    def thresholds(self, s: int) -> dict[str, dict[str, float]]:
        """Per label at stage s: the aggregate confidence an item needs, and what it means calibrated."""
        out = {}
        for k, name in enumerate(self.label_names):
            finite = np.isfinite(self.lambda_)
            calibrated = float(self.calibrated(s, np.array([k]), np.array([self.lambda_]))[0]) if finite else None
            out[str(name)] = {"confidence": self.level, "calibrated": calibrated}
        return out


MIN_PER_LABEL = 20  # calibrate per label when a label has this many gold items with both outcomes


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    top = np.max(x, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(x - top).sum(axis=axis)) + np.squeeze(top, axis=axis)
