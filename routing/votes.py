"""Votes as arrays: the long `task, worker, label` table that every aggregation method fits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class VoteTable:
    """Integer-coded votes. `soft` (optional) holds per-vote label probabilities (n_votes x n_labels)."""

    tasks: np.ndarray  # task index per vote
    workers: np.ndarray  # worker index per vote
    labels: np.ndarray  # label index per vote
    task_names: list
    worker_names: list
    label_names: list
    soft: np.ndarray | None = None

    @property
    def n_tasks(self) -> int:
        return len(self.task_names)

    @property
    def n_workers(self) -> int:
        return len(self.worker_names)

    @property
    def n_labels(self) -> int:
        return len(self.label_names)

    @classmethod
    def from_records(cls, records, label_names: list | None = None, soft: list | None = None) -> "VoteTable":
        """From (task, worker, label) triples; `soft` is an optional list of {label: p} per record (or None)."""
        records = list(records)
        tasks, workers, labels = (list(col) for col in zip(*records)) if records else ([], [], [])
        label_names = list(label_names) if label_names is not None else sorted(set(labels), key=str)
        task_names, t = np.unique(np.array(tasks, dtype=object).astype(str), return_inverse=True) if tasks else ([], np.array([], int))
        worker_names, w = np.unique(np.array(workers, dtype=object).astype(str), return_inverse=True) if workers else ([], np.array([], int))
        index = {label: i for i, label in enumerate(label_names)}
        unknown = sorted({str(lab) for lab in labels if lab not in index})
        if unknown:
            raise ValueError(f"votes use labels outside the label set: {', '.join(unknown[:5])}")
        soft_matrix = None
        if soft is not None and any(p for p in soft):
            soft_matrix = np.zeros((len(records), len(label_names)))
            for row, (probs, label) in enumerate(zip(soft, labels)):
                if probs:
                    for name, p in probs.items():
                        if name in index:
                            soft_matrix[row, index[name]] = p
                    total = soft_matrix[row].sum()
                    soft_matrix[row] = soft_matrix[row] / total if total > 0 else 0
                if not probs or soft_matrix[row].sum() == 0:
                    soft_matrix[row, index[label]] = 1.0
        return cls(
            tasks=np.asarray(t, dtype=np.int64), workers=np.asarray(w, dtype=np.int64),
            labels=np.array([index[lab] for lab in labels], dtype=np.int64),
            task_names=list(task_names), worker_names=list(worker_names), label_names=label_names, soft=soft_matrix,
        )

    def one_hot(self) -> np.ndarray:
        out = np.zeros((len(self.labels), self.n_labels))
        out[np.arange(len(self.labels)), self.labels] = 1.0
        return out

    def counts(self, weights: np.ndarray | None = None) -> np.ndarray:
        """Per-task label counts (n_tasks x n_labels), each vote weighted; a vote with
        probabilities (`soft`) spreads its weight over the labels by them."""
        weights = np.ones(len(self.labels)) if weights is None else weights
        votes = self.soft if self.soft is not None else self.one_hot()
        out = np.zeros((self.n_tasks, self.n_labels))
        for k in range(self.n_labels):
            out[:, k] = np.bincount(self.tasks, weights=votes[:, k] * weights, minlength=self.n_tasks)
        return out


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    return probs / probs.sum(axis=1, keepdims=True)


def anchor(probas: np.ndarray, gold: dict[int, int] | None) -> np.ndarray:
    """Tasks with a known label keep it, so they pin the workers' error estimates."""
    if gold:
        idx = np.fromiter(gold.keys(), dtype=np.int64)
        probas[idx] = 0.0
        probas[idx, np.fromiter(gold.values(), dtype=np.int64)] = 1.0
    return probas


class Aggregator:
    """crowd-kit's shape: `fit` sets `probas_` and `labels_`; these two follow from it."""

    def fit(self, table: VoteTable, gold: dict[int, int] | None = None) -> "Aggregator":
        raise NotImplementedError

    def fit_predict(self, table: VoteTable, gold: dict[int, int] | None = None) -> np.ndarray:
        return self.fit(table, gold).labels_

    def fit_predict_proba(self, table: VoteTable, gold: dict[int, int] | None = None) -> np.ndarray:
        return self.fit(table, gold).probas_
