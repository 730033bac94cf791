"""Majority vote: each task's label is the one most workers chose."""

from __future__ import annotations

import numpy as np

from routing.votes import Aggregator, VoteTable, anchor


class MajorityVote(Aggregator):
    """The share of votes per label is the posterior; ties go to the first label in the label set.

    >>> table = VoteTable.from_records([("t1", "a", "x"), ("t1", "b", "x"), ("t1", "c", "y")])
    >>> MajorityVote().fit_predict_proba(table).round(2).tolist()
    [[0.67, 0.33]]
    """

    def fit(self, table: VoteTable, gold: dict[int, int] | None = None) -> "MajorityVote":
        counts = table.counts()
        totals = counts.sum(axis=1, keepdims=True)
        self.probas_ = anchor(np.divide(counts, totals, out=np.full_like(counts, 1.0 / table.n_labels), where=totals > 0), gold)
        self.labels_ = self.probas_.argmax(axis=1)
        return self
