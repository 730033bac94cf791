"""Metrics of an annotator's answers against gold. Abstentions count: accuracy is always over
every gold item asked, shown beside coverage (the share answered), never over answers alone."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from labeler.tasks import NOTHING_ELSE, stored_spans
from routing.calibration import expected_calibration_error

ABSTAIN = "(abstained)"


def classification(truth: list[str], predicted: list[str | None], labels: list[str]) -> dict[str, Any]:
    """Accuracy, coverage, macro-F1, Cohen's kappa with gold, per-label precision/recall, confusion matrix."""
    answered = [p is not None for p in predicted]
    pred = [p if p is not None else ABSTAIN for p in predicted]
    n = len(truth)
    precision, recall, _, support = precision_recall_fscore_support(truth, pred, labels=labels, zero_division=0)
    return {
        "items": n,
        "coverage": round(sum(answered) / n, 4) if n else None,
        "accuracy": round(sum(t == p for t, p in zip(truth, pred)) / n, 4) if n else None,
        "macro_f1": round(float(f1_score(truth, pred, labels=labels, average="macro", zero_division=0)), 4),
        "kappa": round(float(cohen_kappa_score(truth, pred)), 4) if len(set(truth) | set(pred)) > 1 else None,
        "per_label": {
            label: {"precision": round(float(p), 4), "recall": round(float(r), 4), "support": int(s)}
            for label, p, r, s in zip(labels, precision, recall, support)
        },
        "confusion": {"labels": labels + [ABSTAIN],
                      "matrix": confusion_matrix(truth, pred, labels=labels + [ABSTAIN]).tolist()},
    }


def label_set_classification(truth: list[str], predicted: list[str | None], labels: list[str]) -> dict[str, Any]:
    """For label sets (stored joined by `|`, labeler.tasks): exact-set accuracy (`accuracy`), coverage,
    per-label precision / recall / F1, micro and macro F1, Hamming loss. An abstention counts as the empty
    set for the per-label figures and as wrong for the exact set."""
    from sklearn.metrics import hamming_loss

    n = len(truth)
    matrix = lambda values: np.array([[int(label in (v.split("|") if v else [])) for label in labels]  # noqa: E731
                                      for v in values]).reshape(len(values), len(labels))
    y, p = matrix(truth), matrix([v or "" for v in predicted])
    precision, recall, f1, support = precision_recall_fscore_support(y, p, zero_division=0)
    return {
        "task": "multi_label",
        "items": n,
        "coverage": round(sum(v is not None for v in predicted) / n, 4) if n else None,
        "accuracy": round(sum(t == v for t, v in zip(truth, predicted)) / n, 4) if n else None,
        "micro_f1": round(float(f1_score(y, p, average="micro", zero_division=0)), 4) if n else None,
        "macro_f1": round(float(f1_score(y, p, average="macro", zero_division=0)), 4) if n else None,
        "hamming_loss": round(float(hamming_loss(y, p)), 4) if n else None,
        "kappa": None,
        "per_label": {
            label: {"precision": round(float(a), 4), "recall": round(float(b), 4), "f1": round(float(c), 4), "support": int(s)}
            for label, a, b, c, s in zip(labels, precision, recall, f1, support)
        },
        "confusion": None,  # per label it is the precision and recall above
    }


def _overlap_matches(found: set, reference: set) -> int:
    """How many of `found` overlap a span of the same type in `reference` (partial matching)."""
    return sum(any(t == u and a < d and c < b for c, d, u in reference) for a, b, t in found)


def _prf(matched_p: int, n_pred: int, matched_r: int, n_true: int) -> dict[str, float]:
    precision = matched_p / n_pred if n_pred else 1.0
    recall = matched_r / n_true if n_true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}


def span_classification(truth: list[str], predicted: list[str | None], labels: list[str]) -> dict[str, Any]:
    """For spans (stored as `start:end:label` joined by `|`, labeler.tasks): the exact set of an item's spans
    (`accuracy`), coverage, and precision / recall / F1 of spans per type and over all (micro), both for
    exact matches (same offsets and type) and partial ones (overlapping, same type). An abstention counts
    as no spans for the span figures and as wrong for the exact set.

    >>> r = span_classification(["0:4:person|10:15:place"], ["0:4:person|9:15:place"], ["person", "place"])
    >>> r["accuracy"], r["exact"]["f1"], r["partial"]["f1"]
    (0.0, 0.5, 1.0)
    """
    n = len(truth)
    gold = [set(stored_spans(t)) for t in truth]
    pred = [set(stored_spans(p)) for p in predicted]

    def figures(kind: str | None, partial: bool) -> dict[str, float]:
        pick = (lambda spans: spans) if kind is None else (lambda spans: {s for s in spans if s[2] == kind})
        n_pred = n_true = hit_p = hit_r = 0
        for g, p in zip(gold, pred):
            g, p = pick(g), pick(p)
            n_pred, n_true = n_pred + len(p), n_true + len(g)
            if partial:
                hit_p, hit_r = hit_p + _overlap_matches(p, g), hit_r + _overlap_matches(g, p)
            else:
                both = len(p & g)
                hit_p, hit_r = hit_p + both, hit_r + both
        return _prf(hit_p, n_pred, hit_r, n_true) | {"support": n_true}

    per_type = {label: figures(label, False) for label in labels}
    return {
        "task": "spans",
        "items": n,
        "coverage": round(sum(v is not None for v in predicted) / n, 4) if n else None,
        "accuracy": round(sum(g == p and v is not None for g, p, v in zip(gold, pred, predicted)) / n, 4) if n else None,
        "exact": figures(None, False),
        "partial": figures(None, True),
        "micro_f1": figures(None, False)["f1"],
        "macro_f1": round(float(np.mean([f["f1"] for f in per_type.values()])), 4) if labels else None,
        "kappa": None,
        "per_label": per_type,
        "per_label_partial": {label: figures(label, True) for label in labels},
        "confusion": None,
    }


def span_set_confidence(answer: str | None, probs: dict[str, float] | None) -> float | None:
    """Spans' probability of being exactly right: the product of each span's probability and of
    P(no other span) (labeler.tasks.NOTHING_ELSE), where the vote gives them."""
    if answer is None or not probs or NOTHING_ELSE not in probs:
        return None
    parts = [p for p in answer.split("|") if p]
    if not all(p in probs for p in parts):
        return None
    return float(np.prod([probs[p] for p in parts] + [probs[NOTHING_ELSE]]))


def set_confidence(probs: dict[str, float] | None, labels: list[str]) -> float | None:
    """A label set's probability of being exactly right from P(each label applies), labels taken apart."""
    if not probs or not all(label in probs for label in labels):
        return None
    return float(np.prod([max(probs[label], 1 - probs[label]) for label in labels]))


def coverage_accuracy(confidence: np.ndarray, correct: np.ndarray) -> list[tuple[float, float]]:
    """Accepting the most confident first: (share accepted, accuracy of the accepted) at each step."""
    order = np.argsort(-np.asarray(confidence, float), kind="stable")
    right = np.cumsum(np.asarray(correct, float)[order])
    n = np.arange(1, len(order) + 1)
    return list(zip((n / len(order)).round(4).tolist(), (right / n).round(4).tolist()))


def auto_share(curve: list[tuple[float, float]], target: float) -> float:
    """The largest share that could be accepted with accuracy at least `target` (empirical, on gold)."""
    return max((coverage for coverage, accuracy in curve if accuracy >= target), default=0.0)


def confidence_quality(confidence: list[float | None], correct: list[bool], target: float) -> dict[str, Any]:
    """How well confidence separates right from wrong: ECE, AUROC, the coverage-accuracy curve."""
    pairs = [(c, r) for c, r in zip(confidence, correct) if c is not None]
    if len(pairs) < 2:
        return {"ece": None, "auroc": None, "curve": [], "auto_share": None, "reliability": []}
    conf, right = np.array([c for c, _ in pairs]), np.array([r for _, r in pairs])
    curve = coverage_accuracy(conf, right)
    return {
        "reliability": reliability(conf, right),
        "ece": round(expected_calibration_error(conf, right), 4),
        "auroc": round(float(roc_auc_score(right, conf)), 4) if 0 < right.mean() < 1 else None,
        "curve": curve,
        "auto_share": auto_share(curve, target),
    }


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None}
    return {"p50": round(float(np.percentile(values, 50)), 2), "p95": round(float(np.percentile(values, 95)), 2)}


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> list[dict]:
    """Per confidence bin: mean confidence, accuracy, count (the reliability diagram's points)."""
    which = np.clip((np.asarray(confidence) * bins).astype(int), 0, bins - 1)
    return [
        {"confidence": round(float(confidence[which == b].mean()), 4), "accuracy": round(float(correct[which == b].mean()), 4),
         "count": int((which == b).sum())}
        for b in range(bins) if (which == b).any()
    ]
