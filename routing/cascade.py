"""The cascade: ask annotators (or buy votes) one stage at a time, stop when the label can be trusted.

A ConfusionModel learns each worker's confusion matrix from gold; the posterior after any set
of votes follows from it. An item is accepted at the first stage whose posterior confidence
reaches one level, lambda, shared by all stages and labels. A CascadePolicy also calibrates,
per stage and predicted label, that confidence into the probability of being right (Platt),
which is what decisions report.

Lambda is chosen on gold the models never saw (sample splitting), by fixed-sequence testing
of the accepted items' accuracy over the whole cascade with a one-sided Clopper-Pearson bound
(see routing.calibration): with probability at least `confidence`, the accuracy of
automatically accepted items is at least `target_accuracy`, as long as new items come from
the same distribution as the gold. One lambda rather than one per label: splitting the error
budget over labels (and stages) cost most of the automatic share at the gold sizes we have
(bench/replay.py); thresholding the raw posterior kept its resolution near 1, which
calibrated maps flattened.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from routing.calibration import Calibrator, fixed_sequence
from routing.votes import softmax_rows

MIN_PER_LABEL = 20  # calibrate per label when a label has this many gold items with both outcomes


class ConfusionModel:
    """Per-worker confusion matrices counted on gold, shrunk toward the pooled matrix.

    Workers with few gold votes borrow strength from everyone's (`shrinkage` pseudo-votes);
    workers never seen on gold get the pooled matrix."""

    def __init__(self, n_labels: int, shrinkage: float = 2.0, smoothing: float = 0.5):
        self.n_labels = n_labels
        self.shrinkage = shrinkage
        self.smoothing = smoothing

    def fit(self, workers: list, observed: np.ndarray, truth: np.ndarray) -> "ConfusionModel":
        K = self.n_labels
        names = sorted(set(workers), key=str)
        self.index_ = {w: i for i, w in enumerate(names)}
        w_idx = np.array([self.index_[w] for w in workers], dtype=np.int64)
        counts = np.zeros((len(names), K, K))
        np.add.at(counts, (w_idx, truth, observed), 1.0)
        pooled = counts.sum(axis=0) + self.smoothing
        self.pooled_ = pooled / pooled.sum(axis=1, keepdims=True)
        conf = counts + self.shrinkage * self.pooled_[None]
        self.log_errors_ = np.log(conf / conf.sum(axis=2, keepdims=True))
        self.log_pooled_ = np.log(self.pooled_)
        priors = np.bincount(truth, minlength=K) + 1.0
        self.log_priors_ = np.log(priors / priors.sum())
        return self

    def vote_log_likelihood(self, worker, observed: int) -> np.ndarray:
        """log P(this vote | true label) for each true label."""
        i = self.index_.get(worker)
        return (self.log_pooled_ if i is None else self.log_errors_[i])[:, observed]

    def posterior(self, votes: list[tuple]) -> np.ndarray:
        """P(true label | votes) for one task's (worker, label index) votes."""
        logits = self.log_priors_.copy()
        for worker, observed in votes:
            logits += self.vote_log_likelihood(worker, observed)
        return softmax_rows(logits[None])[0]


@dataclass
class StageScores:
    """For n tasks at one stage: the predicted label index and the posterior's top probability."""

    predicted: np.ndarray
    score: np.ndarray
    active: np.ndarray  # the task has a vote at this stage (it can be judged here)

    @classmethod
    def from_posteriors(cls, posteriors: np.ndarray, active: np.ndarray) -> "StageScores":
        return cls(posteriors.argmax(axis=1), posteriors.max(axis=1), np.asarray(active, bool))


class CascadePolicy:
    def __init__(self, label_names: list, target: float, confidence: float):
        self.label_names = list(label_names)
        self.target = target
        self.delta = 1.0 - confidence

    def _fit_calibrators(self, stages: list[StageScores], truth: np.ndarray) -> None:
        self.calibrators_ = []
        for stage in stages:
            mask = stage.active
            correct = stage.predicted == truth
            pooled = Calibrator().fit(stage.score[mask], correct[mask])
            per_label = {}
            for k in range(len(self.label_names)):
                m = mask & (stage.predicted == k)
                if m.sum() >= MIN_PER_LABEL and 0 < correct[m].mean() < 1:
                    per_label[k] = Calibrator().fit(stage.score[m], correct[m])
            self.calibrators_.append((pooled, per_label))

    def calibrated(self, s: int, predicted: np.ndarray, score: np.ndarray) -> np.ndarray:
        pooled, per_label = self.calibrators_[min(s, len(self.calibrators_) - 1)]
        out = pooled.predict(score)
        for k, calibrator in per_label.items():
            m = predicted == k
            if m.any():
                out[m] = calibrator.predict(score[m])
        return out

    def simulate(self, stages: list[StageScores], lam: float) -> tuple[np.ndarray, np.ndarray]:
        """The stage at which each task is accepted (-1: never) and its predicted label then."""
        n = len(stages[0].score)
        accepted_at = np.full(n, -1)
        label = stages[-1].predicted.copy()
        for s, stage in enumerate(stages):
            open_ = (accepted_at < 0) & stage.active
            take = open_ & (stage.score >= lam)
            accepted_at[take] = s
            label[take] = stage.predicted[take]
        return accepted_at, label

    def fit(self, fit_stages: list[StageScores], fit_truth, test_stages: list[StageScores], test_truth) -> "CascadePolicy":
        """Calibrators on the fit part; lambda by fixed-sequence testing on the test part."""
        fit_truth, test_truth = np.asarray(fit_truth), np.asarray(test_truth)
        self._fit_calibrators(fit_stages, fit_truth)

        def evaluate(lam):
            accepted_at, label = self.simulate(test_stages, lam)
            taken = accepted_at >= 0
            return int(taken.sum()), int((label[taken] == test_truth[taken]).sum())

        self.lambda_, self.bound_ = fixed_sequence(evaluate, len(test_truth), self.target, self.delta)
        if np.isfinite(self.lambda_):
            # Never below what the test gold covered: snap up to the lowest score it accepted there
            # (the accepted set is the same), and never down to a posterior that says nothing.
            seen = np.concatenate([st.score[st.active & (st.score >= self.lambda_)] for st in test_stages])
            floor = 1.0 / len(self.label_names) + 1e-9
            self.lambda_ = float(max(seen.min() if len(seen) else self.lambda_, floor))
        self.n_test_ = len(test_truth)
        return self

    def thresholds(self, s: int) -> dict[str, dict[str, float]]:
        """Per label at stage s: the aggregate confidence an item needs, and what it means calibrated."""
        out = {}
        for k, name in enumerate(self.label_names):
            tau = self.lambda_
            calibrated = float(self.calibrated(s, np.array([k]), np.array([tau]))[0]) if np.isfinite(tau) else None
            out[str(name)] = {"confidence": tau, "calibrated": calibrated}
        return out


def split_gold(n: int, seed: int, fit_share: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the gold used to fit the models, and of the gold that tests lambda."""
    order = np.random.default_rng(seed).permutation(n)
    cut = int(round(n * fit_share))
    return np.sort(order[:cut]), np.sort(order[cut:])


def stage_scores(model: ConfusionModel, tasks: list, ordered: dict, n_stages: int, K: int) -> list[StageScores]:
    """Posteriors after each stage. `ordered[task]` lists its votes by stage: (worker, label index),
    or None where that stage's worker abstained (no information, but the stage was reached)."""
    stages = []
    for s in range(n_stages):
        post = np.empty((len(tasks), K))
        active = np.zeros(len(tasks), bool)
        for i, t in enumerate(tasks):
            post[i] = model.posterior([v for v in ordered[t][: s + 1] if v is not None])
            active[i] = len(ordered[t]) > s
        stages.append(StageScores.from_posteriors(post, active))
    return stages


def _fit_model(tasks: list, ordered: dict, gold_idx: dict, K: int) -> ConfusionModel:
    votes = [(v[0], v[1], gold_idx[t]) for t in tasks for v in ordered[t] if v is not None]
    workers = [w for w, _, _ in votes]
    return ConfusionModel(K).fit(
        workers, np.array([o for _, o, _ in votes], np.int64), np.array([g for _, _, g in votes], np.int64)
    )


def fit_cascade(calib: list, ordered: dict, gold_idx: dict, label_names: list, n_stages: int,
                target: float, confidence: float, seed: int = 0, folds: int = 5) -> tuple[ConfusionModel, CascadePolicy]:
    """Worker model and policy from gold: half fits them, the other half tests lambda.

    The calibrators learn from out-of-fold posteriors within the fit half, so they see honest
    scores, as new items' will be."""
    K = len(label_names)
    fit_i, check_i = split_gold(len(calib), seed)
    fit, check = [calib[i] for i in fit_i], [calib[i] for i in check_i]
    model = _fit_model(fit, ordered, gold_idx, K)
    fold = np.random.default_rng(seed).permutation(np.arange(len(fit)) % folds)
    oof = [StageScores(np.zeros(len(fit), int), np.zeros(len(fit)), np.zeros(len(fit), bool)) for _ in range(n_stages)]
    for f in range(folds):
        inside = [t for t, g in zip(fit, fold) if g != f]
        held = np.nonzero(fold == f)[0]
        if not len(held) or not inside:
            continue
        fold_model = _fit_model(inside, ordered, gold_idx, K)
        for s, stage in enumerate(stage_scores(fold_model, [fit[i] for i in held], ordered, n_stages, K)):
            oof[s].predicted[held], oof[s].score[held], oof[s].active[held] = stage.predicted, stage.score, stage.active
    policy = CascadePolicy(label_names, target, confidence).fit(
        oof, [gold_idx[t] for t in fit],
        stage_scores(model, check, ordered, n_stages, K), [gold_idx[t] for t in check],
    )
    return model, policy
