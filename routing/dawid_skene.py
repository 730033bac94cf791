"""Dawid-Skene: EM over per-worker confusion matrices (Dawid and Skene, 1979)."""

from __future__ import annotations

import numpy as np

from routing.majority_vote import MajorityVote
from routing.votes import Aggregator, VoteTable, anchor, softmax_rows

_EPS = 1e-10


def task_log_likelihood(table: VoteTable, log_conf: np.ndarray) -> np.ndarray:
    """Sum over each task's votes of log P(vote | true label): an (n_tasks x K) matrix."""
    per_vote = log_conf[table.workers, :, table.labels]  # (n_votes x K)
    out = np.zeros((table.n_tasks, table.n_labels))
    for k in range(table.n_labels):
        out[:, k] = np.bincount(table.tasks, weights=per_vote[:, k], minlength=table.n_tasks)
    return out


class DawidSkene(Aggregator):
    """Each worker has a confusion matrix P(vote | true label); tasks get posteriors over labels.

    Starts from majority vote and alternates: estimate priors and confusion matrices from the
    posteriors (M-step), then posteriors from them (E-step), until nothing moves. `gold` (task
    index -> label index) anchors known tasks. Vectorised with numpy bincounts: 100k votes fit
    in well under a second. `smoothing` adds pseudo-counts to every confusion row, so a worker
    never has a zero-probability vote (which would veto a label outright).

    >>> t = VoteTable.from_records([("a", "w1", 1), ("a", "w2", 1), ("a", "w3", 0),
    ...                             ("b", "w1", 0), ("b", "w2", 0), ("b", "w3", 0)])
    >>> DawidSkene().fit_predict(t).tolist()
    [1, 0]
    """

    def __init__(self, n_iter: int = 100, tol: float = 1e-5, smoothing: float = 0.1):
        self.n_iter = n_iter
        self.tol = tol
        self.smoothing = smoothing

    def _m_step(self, table: VoteTable, probas: np.ndarray) -> None:
        K, W = table.n_labels, table.n_workers
        conf = np.zeros((W, K, K))  # [worker, true, observed]
        for observed in range(K):
            mask = table.labels == observed
            for true in range(K):
                conf[:, true, observed] = np.bincount(
                    table.workers[mask], weights=probas[table.tasks[mask], true], minlength=W
                )
        conf += self.smoothing / K
        self.errors_ = conf / conf.sum(axis=2, keepdims=True)
        self.priors_ = np.clip(probas.mean(axis=0), _EPS, None)

    def fit(self, table: VoteTable, gold: dict[int, int] | None = None) -> "DawidSkene":
        probas = anchor(MajorityVote().fit_predict_proba(table).copy(), gold)
        self.n_iter_ = 0
        for self.n_iter_ in range(1, self.n_iter + 1):
            self._m_step(table, probas)
            logits = np.log(self.priors_)[None, :] + task_log_likelihood(table, np.log(self.errors_))
            new = anchor(softmax_rows(logits), gold)
            delta = np.abs(new - probas).max()
            probas = new
            if delta < self.tol:
                break
        self.probas_ = probas
        self.labels_ = probas.argmax(axis=1)
        self.skills_ = np.einsum("k,wkk->w", self.priors_, self.errors_)  # each worker's expected accuracy
        return self
