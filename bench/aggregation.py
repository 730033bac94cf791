"""Aggregation accuracy and time on every crowd set in ../shared/datasets, beside crowd-kit's figures.

    python bench/aggregation.py

Also times Dawid-Skene on 100,000 synthetic votes (target: under one second).
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
# crowd-kit 1.4.2 defaults, from ../shared/datasets/README.md (product: the full D_Product there)
CROWD_KIT = {
    "product": {"mv": 0.897, "ds": 0.940},
    "possent": {"mv": 0.932, "ds": 0.960},
    "rte": {"mv": 0.919, "ds": 0.928},
    "weather": {"mv": 0.847, "ds": 0.840},
}


def synthetic(n_votes: int, n_workers: int = 500, n_labels: int = 3, seed: int = 0) -> VoteTable:
    rng = np.random.default_rng(seed)
    n_tasks = n_votes // 10
    truth = rng.integers(n_labels, size=n_tasks)
    tasks = np.repeat(np.arange(n_tasks), 10)
    workers = rng.integers(n_workers, size=n_votes)
    skill = rng.uniform(0.5, 0.95, size=n_workers)[workers]
    right = rng.random(n_votes) < skill
    labels = np.where(right, truth[tasks], rng.integers(n_labels, size=n_votes))
    return VoteTable(tasks, workers, labels, list(range(n_tasks)), list(range(n_workers)), list(range(n_labels)))


def main() -> None:
    print(f"{'dataset':10} {'votes':>7} " + " ".join(f"{m:>16}" for m in METHODS) + "   crowd-kit mv / ds")
    for folder in sorted(p for p in DATASETS.iterdir() if (p / "labels.csv").exists()):
        records = read_votes(folder / "labels.csv")
        gold = read_gold(folder / "gold.csv")
        labels = sorted({r[2] for r in records} | set(gold.values()))
        table = VoteTable.from_records(records, labels)
        cells = []
        for name, method in METHODS.items():
            started = time.perf_counter()
            model = method().fit(table)
            seconds = time.perf_counter() - started
            scored = [(labels[model.labels_[i]] == gold[t]) for i, t in enumerate(table.task_names) if t in gold]
            cells.append(f"{np.mean(scored):.4f} {seconds * 1000:6.1f}ms")
        ref = CROWD_KIT.get(folder.name, {})
        print(f"{folder.name:10} {len(records):7d} " + " ".join(f"{c:>16}" for c in cells)
              + (f"   {ref['mv']:.3f} / {ref['ds']:.3f}" if ref else ""))
    table = synthetic(100_000)
    DawidSkene().fit(table)  # warm up
    started = time.perf_counter()
    model = DawidSkene().fit(table)
    print(f"\nDawid-Skene on 100,000 votes ({table.n_tasks} tasks, {table.n_workers} workers, 3 labels): "
          f"{time.perf_counter() - started:.3f} s, {model.n_iter_} iterations")


if __name__ == "__main__":
    main()
