"""The cascade on recorded crowd votes: `labeler replay` over 20 seeds per dataset.

    python bench/replay.py [--target 0.95] [--seeds 20]

Per dataset: how often the guarantee held (auto-accepted accuracy >= target on the test half),
mean auto_fraction, auto accuracy and accuracy over all items, and votes used against all votes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from routing.aggregate import read_gold, read_votes  # noqa: E402
from routing.replay import replay  # noqa: E402

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--confidence", type=float, default=0.9)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("datasets", nargs="*", default=["rte", "product", "possent", "weather", "dog", "face", "duck"])
    args = parser.parse_args()
    print(f"target {args.target}, confidence {args.confidence}, {args.seeds} seeds")
    print(f"{'dataset':8} {'held':>6} {'auto_fraction':>14} {'auto_accuracy':>14} {'accuracy_all':>13} {'votes used':>11}")
    for name in args.datasets:
        records, gold = read_votes(DATASETS / name / "labels.csv"), read_gold(DATASETS / name / "gold.csv")
        runs = [replay(records, gold, args.target, args.confidence, seed) for seed in range(args.seeds)]
        held = sum(r["auto_accuracy"] is None or r["auto_accuracy"] >= args.target for r in runs)
        accepted = [r["auto_accuracy"] for r in runs if r["auto_accuracy"] is not None]
        print(f"{name:8} {held:3d}/{args.seeds:<2d} {np.mean([r['auto_fraction'] for r in runs]):14.3f} "
              f"{np.mean(accepted) if accepted else float('nan'):14.4f} {np.mean([r['accuracy_all'] for r in runs]):13.4f} "
              f"{np.mean([r['votes_used'] / r['votes_available'] for r in runs]):11.3f}")


if __name__ == "__main__":
    main()
