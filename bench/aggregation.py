"""Aggregation accuracy and time on every crowd set in ../shared/datasets, beside crowd-kit's Dawid-Skene.

    python bench/aggregation.py

crowd-kit (extra `dev`) is run on the same votes when installed: its accuracy, its time, and the
share of items where its label and ours agree. Also times Dawid-Skene on 100,000 synthetic votes
(target: under one second).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from routing.aggregate import METHODS, read_gold, read_votes  # noqa: E402
from routing.dawid_skene import DawidSkene  # noqa: E402
from routing.votes import VoteTable  # noqa: E402

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def crowd_kit_ds(records: list, labels: list, table: VoteTable):
    """crowd-kit's Dawid-Skene on the same votes: (labels in our task order, seconds), or None."""
    try:
        import warnings

        import pandas as pd
        from crowdkit.aggregation import DawidSkene as CrowdKitDS
    except ImportError:
        return None
    frame = pd.DataFrame(records, columns=["task", "worker", "label"]).astype({"task": str})
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = CrowdKitDS(n_iter=100).fit_predict(frame)
    return [result[str(t)] for t in table.task_names], time.perf_counter() - started


def synthetic(n_votes: int, n_workers: int = 500, n_labels: int = 3, seed: int = 0, per_task: int = 10,
              skill_beta: tuple | None = None) -> VoteTable:
    """Random workers; `skill_beta` draws skills from a Beta (hard sets) instead of U(0.5, 0.95)."""
    rng = np.random.default_rng(seed)
    n_tasks = n_votes // per_task
    truth = rng.integers(n_labels, size=n_tasks)
    tasks = np.repeat(np.arange(n_tasks), per_task)
    workers = rng.integers(n_workers, size=n_votes)
    skills = rng.beta(*skill_beta, size=n_workers) if skill_beta else rng.uniform(0.5, 0.95, size=n_workers)
    skill = skills[workers]
    right = rng.random(n_votes) < skill
    labels = np.where(right, truth[tasks], rng.integers(n_labels, size=n_votes))
    return VoteTable(tasks, workers, labels, list(range(n_tasks)), list(range(n_workers)), list(range(n_labels)))


def main() -> None:
    print(f"{'dataset':10} {'votes':>7} " + " ".join(f"{m:>16}" for m in METHODS) + "   crowd-kit ds (time, same labels)")
    for folder in sorted(p for p in DATASETS.iterdir() if (p / "labels.csv").exists()):
        records = read_votes(folder / "labels.csv")
        gold = read_gold(folder / "gold.csv")
        labels = sorted({r[2] for r in records} | set(gold.values()))
        table = VoteTable.from_records(records, labels)
        cells, ours = [], None
        for name, method in METHODS.items():
            started = time.perf_counter()
            model = method().fit(table)
            seconds = time.perf_counter() - started
            predicted = [labels[k] for k in model.labels_]
            ours = predicted if name == "ds" else ours
            scored = [predicted[i] == gold[t] for i, t in enumerate(table.task_names) if t in gold]
            cells.append(f"{np.mean(scored):.4f} {seconds * 1000:6.1f}ms")
        reference = crowd_kit_ds(records, labels, table)
        if reference:
            theirs, seconds = reference
            accuracy = np.mean([theirs[i] == gold[t] for i, t in enumerate(table.task_names) if t in gold])
            same = np.mean([a == b for a, b in zip(ours, theirs)])
            cells.append(f"  {accuracy:.4f} ({seconds:.2f} s, {same:.4f})")
        print(f"{folder.name:10} {len(records):7d} " + " ".join(f"{c:>16}" for c in cells))
    print()
    for table in (synthetic(100_000), synthetic(98_000, 766, 5, per_task=8, skill_beta=(2, 2))):
        DawidSkene().fit(table)  # warm up
        started = time.perf_counter()
        model = DawidSkene().fit(table)
        print(f"Dawid-Skene on {len(table.labels):,} votes ({table.n_tasks} tasks, {table.n_workers} workers, "
              f"{table.n_labels} labels): {time.perf_counter() - started:.3f} s, {model.n_iter_} iterations")


if __name__ == "__main__":
    main()
