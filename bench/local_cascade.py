"""What the embedded model buys the cascade on several labels, with and without per-label corrections.

    python bench/local_cascade.py [--items 300] [--targets 0.9 0.85] [DATASET ...]

Each set becomes a project with the `local` annotator alone (bench/local_model.py makes it: 4 examples a
label, the rest calibration gold); one `labeler run` asks it about every calibration item. Then the
cascade's policy is fitted on that gold at each target twice: reading the model's first answers as they
are, and reading them through the per-label corrections (routing.project.fit_corrections, fitted per
fold so every gold item is scored by a correction and a model that never saw its label). Printed: the
share of the gold accepted (cross-fitted, so it speaks for new items), and its accuracy.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from local_model import make_project  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--targets", type=float, nargs="+", default=[0.9, 0.85])
    parser.add_argument("datasets", nargs="*", default=["weather", "topics"])
    args = parser.parse_args()
    from prompts.annotators import build_askers
    from routing.flow import fit_policy, run_project, stages_of
    from routing.store import gold_of

    print(f"{'set':8} {'target':>6} {'corrected':>9} {'auto':>6} {'accuracy':>8} {'gold':>5}")
    for name in args.datasets:
        with tempfile.TemporaryDirectory() as folder:
            ws, _ = make_project(Path(folder), name, args.items, 4)
            askers, _ = build_askers(ws)
            run_project(ws, askers)  # the calibration gold, voted
            gold = gold_of(ws)
            for target in args.targets:
                ws.config.routing.target_accuracy = target
                for correct in (False, True):
                    policy = fit_policy(ws, stages_of(askers), gold, correct=correct)
                    paths, truth = policy.policy.gold_
                    first, label = paths.accept(policy.policy.lambda_)
                    taken = first >= 0
                    accuracy = float((label[taken] == truth[taken]).mean()) if taken.any() else float("nan")
                    print(f"{name:8} {target:6.2f} {str(correct):>9} {taken.mean():6.3f} {accuracy:8.3f} {len(truth):5d}",
                          flush=True)
            ws.engine.dispose()


if __name__ == "__main__":
    main()
