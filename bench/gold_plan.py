"""Is the gold plan honest? It predicts, from part of the gold, the automatic share with more gold; replay measures it.

    python bench/gold_plan.py [--from 0.3] [--to 0.5 0.8] [--draws 20] [--target 0.95] [--guarantee high_probability] [DATASET ...]

Per dataset: over `--draws` draws, the plan made from a `--from` share of the gold predicts the share at
each `--to` share's gold size (routing.plan.gold_plan); bench/replay.py's measurement (out of sample,
`--draws` draws at that share) is what the prediction is checked against. Printed: the mean prediction, the
measured mean, their difference, and the share of draws whose prediction lands within 0.10 of the measurement.
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from routing.aggregate import read_gold, read_votes  # noqa: E402
from routing.cascade import CascadePolicy  # noqa: E402
from routing.plan import gold_plan  # noqa: E402
from routing.replay import holdout, prepare  # noqa: E402

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def predicted(name: str, args, seed: int) -> list[float]:
    records, gold = read_votes(DATASETS / name / "labels.csv"), read_gold(DATASETS / name / "gold.csv")
    prep = prepare(records, gold, seed, "random")
    n = len(prep.tasks)
    calib = np.zeros(n, bool)
    calib[prep.rng.permutation(n)[:int(round(args.share_from * n))]] = True  # as replay's holdout draws it
    policy = CascadePolicy(prep.label_names, args.target, 0.9, args.guarantee).fit(prep.paths[calib], prep.truth[calib])
    paths, truth = policy.gold_
    rows = gold_plan(paths, truth, prep.label_names, args.target, 0.9, args.guarantee,
                     sizes=[int(round(share * n)) for share in args.to], seed=seed)
    return [row["auto_fraction"] for row in rows]


def measured(name: str, args, share: float, seed: int) -> float:
    records, gold = read_votes(DATASETS / name / "labels.csv"), read_gold(DATASETS / name / "gold.csv")
    return holdout(records, gold, args.target, 0.9, seed, share, "random", args.guarantee)["auto_fraction"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--from", dest="share_from", type=float, default=0.3)
    parser.add_argument("--to", type=float, nargs="+", default=[0.5, 0.8])
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--guarantee", default="high_probability")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("datasets", nargs="*", default=["product", "rte", "possent", "weather"])
    args = parser.parse_args()
    os.environ.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    print(f"plan from {args.share_from} of the gold, {args.draws} draws, target {args.target}, {args.guarantee}")
    print(f"{'dataset':8} {'to':>4} {'predicted':>9} {'measured':>8} {'diff':>6} {'within 0.10':>11}")
    with ProcessPoolExecutor(args.workers) as pool:
        for name in args.datasets:
            plans = np.array(list(pool.map(partial(predicted, name, args), range(args.draws))))
            for k, share in enumerate(args.to):
                truth = float(np.mean(list(pool.map(partial(measured, name, args, share), range(args.draws)))))
                print(f"{name:8} {share:4.1f} {plans[:, k].mean():9.3f} {truth:8.3f} {plans[:, k].mean() - truth:+6.3f} "
                      f"{np.mean(np.abs(plans[:, k] - truth) <= 0.10):11.2f}", flush=True)


if __name__ == "__main__":
    main()
