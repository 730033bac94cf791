"""One-coin Dawid-Skene: each worker is right with one probability, wrong uniformly otherwise."""

from __future__ import annotations

import numpy as np

from routing.majority_vote import MajorityVote
from routing.votes import Aggregator, VoteTable, anchor, softmax_rows


class OneCoin(Aggregator):
    """A worker's skill is the chance its vote is the true label; errors spread evenly over the rest.

    Fewer parameters than Dawid-Skene (one per worker instead of K x K), so it holds up better
    for workers with few votes.

    >>> t = VoteTable.from_records([("a", "w1", 1), ("a", "w2", 1), ("a", "w3", 0),
    ...                             ("b", "w1", 0), ("b", "w2", 0), ("b", "w3", 0),
    ...                             ("c", "w1", 1), ("c", "w2", 1), ("c", "w3", 1),
    ...                             ("d", "w1", 0), ("d", "w2", 0), ("d", "w3", 1)])
    >>> model = OneCoin().fit(t)
    >>> model.labels_.tolist(), model.skills_.round(2).tolist()
    ([1, 0, 1, 0], [0.83, 0.83, 0.58])
    """

    def __init__(self, n_iter: int = 100, tol: float = 1e-5, prior_right: float = 2.0, prior_wrong: float = 1.0):
        self.n_iter = n_iter
        self.tol = tol
        self.prior = (prior_right, prior_wrong)  # Beta pseudo-counts keep skills off 0 and 1

    def fit(self, table: VoteTable, gold: dict[int, int] | None = None) -> "OneCoin":
        K, W = table.n_labels, table.n_workers
        probas = anchor(MajorityVote().fit_predict_proba(table).copy(), gold)
        votes_per_worker = np.bincount(table.workers, minlength=W)
        for self.n_iter_ in range(1, self.n_iter + 1):
            right = np.bincount(table.workers, weights=probas[table.tasks, table.labels], minlength=W)
            skills = (right + self.prior[0]) / (votes_per_worker + self.prior[0] + self.prior[1])
            priors = np.clip(probas.mean(axis=0), 1e-10, None)
            log_right, log_wrong = np.log(skills), np.log((1 - skills) / max(K - 1, 1))
            # Each vote adds log_wrong to every label, and (log_right - log_wrong) to the one it names.
            logits = np.log(priors)[None, :] + np.bincount(
                table.tasks, weights=log_wrong[table.workers], minlength=table.n_tasks
            )[:, None]
            np.add.at(logits, (table.tasks, table.labels), (log_right - log_wrong)[table.workers])
            new = anchor(softmax_rows(logits), gold)
            delta = np.abs(new - probas).max()
            probas = new
            if delta < self.tol:
                break
        self.probas_, self.labels_, self.skills_ = probas, probas.argmax(axis=1), skills
        return self
