"""The cascade on recorded crowd votes: `labeler replay` over many seeds per dataset.

    python bench/replay.py [--target 0.95] [--confidence 0.9] [--seeds 50] [--order skill|random] [DATASET ...]

Per dataset (every crowd set in ../shared/datasets by default): the share of seeds where the
guarantee held (accuracy of the automatically accepted items >= target, over every gold item,
each measured once by cross-fitting), the share of folds where it held on that fold's fifth
alone (a noisier measure, as a test half would give), the mean automatic share and its 10th percentile over
seeds, the oracle's share (Dawid-Skene with every vote, in hindsight) and the ratio to it,
votes used of those available, accuracy over all items (routed items taking the aggregate of
the votes they bought) beside Dawid-Skene's with every vote, the same two with
`stop_when_futile: false` (routed items buy every remaining vote), and seconds per replay.
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
from routing.replay import replay  # noqa: E402

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def one(name: str, target: float, confidence: float, order: str, seed: int) -> dict:
    records, gold = read_votes(DATASETS / name / "labels.csv"), read_gold(DATASETS / name / "gold.csv")
    return replay(records, gold, target, confidence, seed, order=order)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--confidence", type=float, default=0.9)
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--order", default="skill", choices=["skill", "random"])
    parser.add_argument("--workers", type=int, default=2)
    default = sorted(p.name for p in DATASETS.iterdir() if (p / "labels.csv").exists()) if DATASETS.is_dir() else []
    parser.add_argument("datasets", nargs="*", default=default)
    args = parser.parse_args()
    print(f"target {args.target}, confidence {args.confidence}, {args.seeds} seeds, votes bought {args.order} first")
    print(f"{'dataset':8} {'held':>5} {'/fold':>5} {'auto':>6} {'p10':>6} {'oracle':>6} {'ratio':>6} {'votes':>6} "
          f"{'acc_all':>7} {'ds_all':>7} {'auto_acc':>8} {'f_votes':>7} {'f_acc':>7} {'s/run':>6}")
    # One BLAS thread per process: the processes already fill the cores.
    os.environ.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    with ProcessPoolExecutor(args.workers) as pool:
        for name in args.datasets:
            runs = list(pool.map(partial(one, name, args.target, args.confidence, args.order), range(args.seeds)))
            auto = np.array([r["auto_fraction"] for r in runs])
            held = np.mean([r["auto_accuracy"] is None or r["auto_accuracy"] >= args.target for r in runs])
            oracle = runs[0]["oracle_auto_fraction"]
            accepted = [r["auto_accuracy"] for r in runs if r["auto_accuracy"] is not None]
            print(f"{name:8} {held:5.2f} {np.mean([r['held_folds'] for r in runs]):5.2f} {auto.mean():6.3f} {np.percentile(auto, 10):6.3f} {oracle:6.3f} "
                  f"{auto.mean() / oracle if oracle else float('nan'):6.3f} "
                  f"{np.mean([r['votes_used'] / r['votes_available'] for r in runs]):6.3f} "
                  f"{np.mean([r['accuracy_all'] for r in runs]):7.4f} {runs[0]['ds_accuracy']:7.4f} "
                  f"{np.mean(accepted) if accepted else float('nan'):8.4f} "
                  f"{np.mean([r['finished_votes_used'] / r['votes_available'] for r in runs]):7.3f} "
                  f"{np.mean([r['finished_accuracy_all'] for r in runs]):7.4f} {np.mean([r['seconds'] for r in runs]):6.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
