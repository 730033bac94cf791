"""The aggregation methods by name, and aggregation of a crowd table file."""

from __future__ import annotations

import time
from pathlib import Path

from labeler.data.readers import read_columns
from labeler.errors import LabelerError
from routing.dawid_skene import DawidSkene
from routing.majority_vote import MajorityVote
from routing.one_coin import OneCoin
from routing.votes import VoteTable
from routing.weighted_majority import WeightedMajorityVote

METHODS = {"mv": MajorityVote, "wmv": WeightedMajorityVote, "ds": DawidSkene, "onecoin": OneCoin}


def read_votes(path: Path) -> list[tuple[str, str, str]]:
    return [values for _, values in read_columns(path, ("task", "worker", "label"))]


def read_gold(path: Path) -> dict[str, str]:
    return dict(values for _, values in read_columns(path, ("task", "label")))


def aggregate_file(votes_path: Path, method: str, gold_path: Path | None = None) -> dict:
    """Aggregate a `task,worker,label` file; with gold (`task,label`), report accuracy."""
    if method not in METHODS:
        raise LabelerError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    records = read_votes(votes_path)
    gold = read_gold(gold_path) if gold_path else {}
    labels = sorted({r[2] for r in records} | set(gold.values()), key=str)
    table = VoteTable.from_records(records, labels)
    started = time.perf_counter()
    model = METHODS[method]().fit(table)
    seconds = time.perf_counter() - started
    confidence = model.probas_.max(axis=1)
    items = [
        {"task": task, "label": labels[model.labels_[i]], "confidence": round(float(confidence[i]), 6)}
        for i, task in enumerate(table.task_names)
    ]
    result = {"method": method, "items": len(items), "votes": len(records), "workers": table.n_workers,
              "seconds": round(seconds, 4), "labels": items}
    if gold:
        scored = [item for item in items if item["task"] in gold]
        result["accuracy"] = round(sum(item["label"] == gold[item["task"]] for item in scored) / len(scored), 4) if scored else None
        result["gold_items"] = len(scored)
    return result
