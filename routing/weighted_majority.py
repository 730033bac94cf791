"""Weighted majority vote: workers weighted by how often they agree with the majority (Wawa)."""

from __future__ import annotations

import numpy as np

from routing.majority_vote import MajorityVote
from routing.votes import Aggregator, VoteTable, anchor


class WeightedMajorityVote(Aggregator):
    """Majority vote, then each worker's weight is its agreement with it, then a weighted vote.

    >>> t = VoteTable.from_records([("a", "w1", 1), ("a", "w2", 1), ("a", "w3", 0),
    ...                             ("b", "w1", 0), ("b", "w2", 0), ("b", "w3", 0)])
    >>> WeightedMajorityVote().fit_predict(t).tolist()
    [1, 0]
    """

    def fit(self, table: VoteTable, gold: dict[int, int] | None = None) -> "WeightedMajorityVote":
        first = MajorityVote().fit(table).labels_.copy()
        if gold:
            first[np.fromiter(gold.keys(), dtype=np.int64)] = np.fromiter(gold.values(), dtype=np.int64)
        agree = (first[table.tasks] == table.labels).astype(float)
        counts = np.bincount(table.workers, minlength=table.n_workers)
        self.skills_ = (np.bincount(table.workers, weights=agree, minlength=table.n_workers) + 1) / (counts + 2)
        weighted = table.counts(self.skills_[table.workers])
        totals = weighted.sum(axis=1, keepdims=True)
        self.probas_ = np.divide(weighted, totals, out=np.full_like(weighted, 1 / table.n_labels), where=totals > 0)
        self.probas_ = anchor(self.probas_, gold)
        self.labels_ = self.probas_.argmax(axis=1)
        return self
