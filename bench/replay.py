"""The cascade on recorded crowd votes, measured out of sample: many draws of the gold, several gold sizes.

    python bench/replay.py [--target 0.95] [--confidence 0.9] [--draws 50] [--shares 0.3 0.5 0.8]
                           [--guarantee high_probability expected] [--order random|skill] [--biased] [DATASET ...]

Per dataset, gold share and guarantee, over `--draws` draws: the cascade calibrates on that share of the
gold (drawn at random, or with --biased mostly among items the crowd was unanimous on, as teams pick
"clear" examples) and labels the rest of the gold as new items, whose labels then score what it accepted.
Votes are bought in random order (what a live system can do; `--order skill` ranks workers by skills
learned from every vote, which a live system does not have). Columns:

  held      share of draws whose accepted items reached the target on the hidden gold (none accepted: held)
  mean_acc  mean accepted accuracy over draws that accepted anything
  err       errors among all accepted items of all draws
  auto p10  automatic share of the new items: mean and 10th percentile over draws
  none      share of draws accepting nothing
  oracle    Dawid-Skene with every vote, the largest share still >= target in hindsight; ratio = auto / oracle
  votes     share of the new items' votes bought
  drift     share of draws whose score drift test flagged the gold (a false alarm unless --biased)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from routing.aggregate import read_gold, read_votes  # noqa: E402
from routing.replay import holdout  # noqa: E402

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
UNANIMOUS_SHARE = 0.9  # --biased: this share of the calibration gold comes from unanimous items


def biased_draw(records, gold: dict, share: float, seed: int) -> set:
    """Calibration gold picked mostly among items whose votes all agree."""
    votes: dict = {}
    for task, _, label in records:
        votes.setdefault(str(task), Counter())[label] += 1
    tasks = sorted(str(t) for t in gold if str(t) in votes)
    unanimous = [t for t in tasks if len(votes[t]) == 1]
    rest = [t for t in tasks if len(votes[t]) > 1]
    rng = np.random.default_rng(10_000 + seed)
    n = int(round(share * len(tasks)))
    clear = min(len(unanimous), int(round(UNANIMOUS_SHARE * n)))
    picked = list(rng.choice(unanimous, clear, replace=False)) + list(rng.choice(rest, min(len(rest), n - clear), replace=False))
    return set(picked)


def one(name: str, args, share: float, guarantee: str, seed: int) -> dict:
    records, gold = read_votes(DATASETS / name / "labels.csv"), read_gold(DATASETS / name / "gold.csv")
    calibration = biased_draw(records, gold, share, seed) if args.biased else None
    return holdout(records, gold, args.target, args.confidence, seed, share, args.order, guarantee, calibration)


def summary(runs: list[dict], target: float) -> str:
    auto = np.array([r["auto_fraction"] for r in runs])
    accepted = [r["auto_accuracy"] for r in runs if r["auto_accuracy"] is not None]
    held = np.mean([r["auto_accuracy"] is None or r["auto_accuracy"] >= target for r in runs])
    err = sum(r["accepted_wrong"] for r in runs) / max(1, sum(r["accepted"] for r in runs))
    oracle = runs[0]["oracle_auto_fraction"]
    drift = np.mean([bool(r["score_drift"] and r["score_drift"]["flagged"]) for r in runs])
    return (f"{held:5.2f} {np.mean(accepted) if accepted else float('nan'):8.4f} {err:6.4f} {auto.mean():6.3f} "
            f"{np.percentile(auto, 10):6.3f} {np.mean(auto == 0):5.2f} {oracle:6.3f} "
            f"{auto.mean() / oracle if oracle else float('nan'):6.3f} "
            f"{np.mean([r['votes_used'] / r['votes_available'] for r in runs]):6.3f} {drift:5.2f} "
            f"{np.mean([r['seconds'] for r in runs]):6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--confidence", type=float, default=0.9)
    parser.add_argument("--draws", type=int, default=50)
    parser.add_argument("--shares", type=float, nargs="+", default=[0.3, 0.5, 0.8])
    parser.add_argument("--guarantee", nargs="+", default=["high_probability", "expected"])
    parser.add_argument("--order", default="random", choices=["skill", "random"])
    parser.add_argument("--biased", action="store_true")
    parser.add_argument("--workers", type=int, default=2)
    default = sorted(p.name for p in DATASETS.iterdir() if (p / "labels.csv").exists()) if DATASETS.is_dir() else []
    parser.add_argument("datasets", nargs="*", default=default)
    args = parser.parse_args()
    print(f"target {args.target}, confidence {args.confidence}, {args.draws} draws, votes bought in {args.order} order"
          + (", gold drawn mostly among unanimous items" if args.biased else ""))
    print(f"{'dataset':8} {'gold':>4} {'guarantee':16} {'held':>5} {'mean_acc':>8} {'err':>6} {'auto':>6} {'p10':>6} "
          f"{'none':>5} {'oracle':>6} {'ratio':>6} {'votes':>6} {'drift':>5} {'s/run':>6}")
    os.environ.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")  # the processes already fill the cores
    with ProcessPoolExecutor(args.workers) as pool:
        for name in args.datasets:
            for share in args.shares:
                for guarantee in args.guarantee:
                    runs = list(pool.map(partial(one, name, args, share, guarantee), range(args.draws)))
                    print(f"{name:8} {share:4.1f} {guarantee:16} {summary(runs, args.target)}", flush=True)


if __name__ == "__main__":
    main()
