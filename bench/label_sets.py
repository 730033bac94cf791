"""Label sets (`task: multi_label`) or spans (`--task spans`) on their examples, out of sample: what the
cascade accepts, and how right it is, on gold it never saw; and what each embedded annotator scores.

    python bench/label_sets.py [--task spans] [--draws 100] [--sizes 50 100 150] [--target 0.9] [--local]

The example (labeler/data/example/support: 400 messages, 5 topics; for spans labeler/data/example/spans:
500 messages, 4 entity types) is set up as a project; its annotators (the classifier or the span tagger,
and with --local the embedded model asked label by label: label sets only) vote on all its calibration
and honeypot items (230; 280 for spans). Then, for each gold size m and each of `draws` draws: m of those items calibrate
(routing.label_sets.fit), the others stand in for new items. Printed per size: the share of held-out
items accepted (mean, p10, p90), their exact-set accuracy (mean over draws, and the share of draws
at the target or above: the guarantee asks for at least `confidence`), and per annotator its exact-set
accuracy and per-label AUROC (spans: span precision, recall and F1, and the AUROC of its confidence in
the whole answer) on the gold, and its seconds per item.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", choices=["multi_label", "spans"], default="multi_label")
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 150])
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--confidence", type=float, default=0.9)
    parser.add_argument("--local", action="store_true", help="also the embedded model (0.5 s an item)")
    args = parser.parse_args()
    from sklearn.metrics import roc_auc_score

    from evals.metrics import span_classification, span_set_confidence
    from labeler.annotators.runner import run_askers
    from labeler.config import LocalAnnotator
    from labeler.data.imports import import_gold, import_items
    from labeler.data.projects import copy_example, example_file
    from labeler.store import models
    from labeler.store.workspace import open_workspace
    from prompts.annotators import build_askers
    from routing.flow import FITS, stages_of
    from routing.store import gold_of, load_votes

    with tempfile.TemporaryDirectory() as folder:
        root = copy_example(Path(folder) / "example", args.task)
        ws = open_workspace(root)
        import_items(ws, root / "items.csv")
        import_gold(ws, example_file(root, "gold"))
        if args.local:
            from labeler.store.workspace import sync_project

            ws.config.annotators.append(LocalAnnotator(name="gemma", kind="local"))
            sync_project(ws.engine, ws.project)
        started = time.perf_counter()
        askers, _ = build_askers(ws)
        print(f"annotators built (the classifier or tagger trained, with its cross-fitting) in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
        gold = {i: g for i, g in gold_of(ws).items() if g[1] != models.Split.examples}
        items = sorted(gold)
        for asker in askers:
            started = time.perf_counter()
            asyncio.run(run_askers(ws, [asker], items))
            per_item = (time.perf_counter() - started) / len(items)
            votes = load_votes(ws, stages_of([asker]), items)
            right = np.mean([votes[i][0][0] == gold[i][0] for i in items])
            if args.task == "spans":
                f = span_classification([gold[i][0] for i in items], [votes[i][0][0] for i in items],
                                        ws.config.label_names)["exact"]
                sure = [span_set_confidence(*votes[i][0]) or 0.0 for i in items]
                auc = roc_auc_score([votes[i][0][0] == gold[i][0] for i in items], sure)
                print(f"{asker.name}: exact spans {right:.3f}, span P {f['precision']:.3f} R {f['recall']:.3f} "
                      f"F1 {f['f1']:.3f}, AUROC of its confidence {auc:.2f}, {per_item:.4f} s an item", flush=True)
                continue
            aucs = []
            for label in ws.config.label_names:
                y = [label in gold[i][0].split("|") for i in items]
                p = [(votes[i][0][1] or {}).get(label, 0.5) for i in items]
                aucs.append(roc_auc_score(y, p))
            print(f"{asker.name}: exact sets {right:.3f}, per-label AUROC {min(aucs):.2f}-{max(aucs):.2f}, "
                  f"{per_item:.3f} s an item (cached answers are free)", flush=True)

        class Routing:
            target_accuracy, confidence, guarantee = args.target, args.confidence, "high_probability"

        stages = stages_of(askers)
        votes = load_votes(ws, stages, items)
        rng = np.random.default_rng(0)
        print(f"\ntarget {args.target} with probability {args.confidence}, {args.draws} draws; held out: the rest of "
              f"{len(items)} gold items")
        print(f"{'gold':>5} {'auto':>6} {'p10':>6} {'p90':>6} {'accuracy':>8} {'draws>=target':>13}")
        for m in args.sizes:
            shares, accuracies, held = [], [], 0
            for _ in range(args.draws):
                picked = rng.permutation(items)
                calib = {int(i): (gold[i][0], models.Split.calibration) for i in picked[:m]}
                new = [int(i) for i in picked[m:]]
                policy = FITS[args.task](stages, ws.config.label_names, votes, calib, Routing)
                if not policy.ready:
                    shares.append(0.0)
                    held += 1
                    continue
                paths = policy.paths(votes, new)
                first, _ = paths.accept(policy.policy.lambda_)
                taken = first >= 0
                right = [policy.answer(paths, r, first[r]) == gold[new[r]][0] for r in np.nonzero(taken)[0]]
                shares.append(float(taken.mean()))
                if right:
                    accuracies.append(float(np.mean(right)))
                held += (np.mean(right) if right else 1.0) >= args.target
            print(f"{m:5d} {np.mean(shares):6.3f} {np.percentile(shares, 10):6.3f} {np.percentile(shares, 90):6.3f} "
                  f"{np.mean(accuracies) if accuracies else float('nan'):8.3f} {held / args.draws:13.2f}", flush=True)
        ws.engine.dispose()


if __name__ == "__main__":
    main()
