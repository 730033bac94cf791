"""Sampled answers as a confidence for a chat model that gives no logprobs (`samples: k`): what k buys.

    python bench/samples.py [--items 400] [--ks 1 3 5 9] [--draws 50] [--target 0.9]

A local test server's `fuzzy` model gives each item a difficulty d in [0, 0.8): sampled at a temperature
it answers a random wrong label with probability d, at temperature 0 wrongly where d >= 0.5, and never
gives logprobs (tests/llm_server.py). For each k (1: one answer at temperature 0), an annotator asks every item; printed:
the vote's accuracy, the AUROC of its confidence (its top share; one answer has none, so 0.5), calls per
item, and the cascade's automatic share and accuracy out of sample: over `draws` draws, half the items
calibrate (routing.project.fit) and the other half are accepted or not at the certified level.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LABELS = ["positive", "negative", "neutral"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 3, 5, 9])
    parser.add_argument("--draws", type=int, default=50)
    parser.add_argument("--target", type=float, default=0.9)
    args = parser.parse_args()
    from tests.llm_server import server_process

    with server_process() as base_url:
        measure(args, base_url)


def measure(args, base_url: str) -> None:
    from sklearn.metrics import roc_auc_score

    from labeler.annotators.runner import run_askers
    from labeler.data.imports import import_gold, import_items
    from labeler.store import models
    from labeler.store.workspace import open_workspace
    from prompts.annotators import build_askers
    from routing import project
    from routing.flow import stages_of
    from routing.store import gold_of, load_votes

    class Routing:
        target_accuracy, confidence, guarantee = args.target, 0.9, "high_probability"

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "samples"
        root.mkdir()
        annotators = "".join(
            f"  - {{name: k{k}, kind: llm, model: openai/fuzzy, api_base: '{base_url}', logprobs: false, "
            f"max_concurrency: 64{', samples: %d, temperature: 1.0' % k if k > 1 else ''}}}\n" for k in args.ks)
        (root / "labeler.yaml").write_text(f"name: samples\nlabels: {{{', '.join(f'{x}: {x}' for x in LABELS)}}}\n"
                                           f"fields: [text]\nannotators:\n{annotators}")
        (root / "guidelines.md").write_text("# Bench\n\n" + "".join(f"## {x}\n{x}\n\n" for x in LABELS))
        rows = [(f"i{n}", f"item {n} is {LABELS[n % 3]}", LABELS[n % 3]) for n in range(args.items)]
        (root / "items.csv").write_text("id,text\n" + "".join(f"{i},{t}\n" for i, t, _ in rows))
        (root / "gold.csv").write_text("id,label\n" + "".join(f"{i},{g}\n" for i, _, g in rows))
        ws = open_workspace(root)
        import_items(ws, root / "items.csv")
        import_gold(ws, root / "gold.csv")
        gold = {i: g for i, g in gold_of(ws).items()}
        items = sorted(gold)
        askers, _ = build_askers(ws)
        asyncio.run(run_askers(ws, askers, items))
        rng = np.random.default_rng(0)
        print(f"{args.items} items, target {args.target} with probability 0.9, {args.draws} draws of half the items "
              "as calibration gold")
        print(f"{'k':>3} {'calls/item':>10} {'accuracy':>8} {'AUROC':>6} {'auto':>6} {'auto acc':>8}")
        for k, asker in zip(args.ks, askers):
            stages = stages_of([asker])
            votes = load_votes(ws, stages, items)
            right = np.array([votes[i][0][0] == gold[i][0] for i in items])
            sure = np.array([max((votes[i][0][1] or {"": 0.5}).values()) for i in items])
            auroc = roc_auc_score(right, sure) if 0 < right.mean() < 1 else float("nan")
            shares, accs = [], []
            for _ in range(args.draws):
                order = rng.permutation(items)
                calib = {int(i): (gold[i][0], models.Split.calibration) for i in order[: len(items) // 2]}
                new = [int(i) for i in order[len(items) // 2:]]
                policy = project.fit(stages, LABELS, votes, calib, Routing)
                if not policy.ready:
                    shares.append(0.0)
                    continue
                first, label = policy.paths(votes, new).accept(policy.policy.lambda_)
                taken = first >= 0
                shares.append(float(taken.mean()))
                if taken.any():
                    accs.append(float(np.mean([LABELS[c] == gold[i][0] for i, c in zip(np.array(new)[taken], label[taken])])))
            print(f"{k:3d} {k:10d} {right.mean():8.3f} {auroc:6.2f} {np.mean(shares):6.3f} "
                  f"{np.mean(accs) if accs else float('nan'):8.3f}", flush=True)
        ws.engine.dispose()


if __name__ == "__main__":
    main()
