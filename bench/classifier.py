"""The `model` annotator's features: TF-IDF against a linear probe on the embedded model's embeddings.

    python bench/classifier.py [--items 600] [--seeds 3] [DATASET ...]

Learning curves: accuracy on held-out items after training on 50, 100, 200 and 400 labels
(fewer where a set is small), the mean over seeds, for TF-IDF + logistic regression and for
logistic regression on Gemma 3 270M's mean-pooled embeddings (the two `features` of
`kind: model`), and the embedding time per item. Sets: sst2, rte, weather and product from
../shared/datasets, and the 4-label news set written for this project (tests/data/topics.csv).
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATASETS = ROOT.parent / "shared" / "datasets"
FIELDS = {"sst2": ["text"], "rte": ["text", "hypothesis"], "weather": ["tweet_body"],
          "product": ["a_name", "a_description", "a_price", "b_name", "b_description", "b_price"]}
SIZES = (50, 100, 200, 400)


def rows_of(name: str) -> list[tuple[str, str]]:
    """(text, label) as the classifier sees an item: its fields joined."""
    from labeler.annotators.classifier import item_text

    if name == "topics":
        with (ROOT / "tests" / "data" / "topics.csv").open(encoding="utf-8") as f:
            return [(r["text"], r["label"]) for r in csv.DictReader(f)]
    with (DATASETS / name / "items.csv").open(encoding="utf-8") as f:
        items = {r["task"]: r for r in csv.DictReader(f)}
    with (DATASETS / name / "gold.csv").open(encoding="utf-8") as f:
        return [(item_text(items[r["task"]], FIELDS[name]), r["label"]) for r in csv.DictReader(f) if r["task"] in items]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=700)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("datasets", nargs="*", default=["sst2", "rte", "weather", "product", "topics"])
    args = parser.parse_args()
    from labeler.annotators import local as local_llm
    from labeler.annotators.classifier import _pipeline, _probe

    local_llm.embed(["warm up"])
    print("accuracy on held-out items after n training labels: tfidf / embeddings")
    print(f"{'set':8} {'items':>5} " + " ".join(f"{f'n={n}':>13}" for n in SIZES) + f" {'embed s/item':>12}")
    for name in args.datasets:
        rows = rows_of(name)
        random.Random(0).shuffle(rows)
        rows = rows[:args.items]
        texts = np.array([t for t, _ in rows], dtype=object)
        labels = np.array([y for _, y in rows])
        started = time.perf_counter()
        vectors = local_llm.embed(list(texts))
        per_item = (time.perf_counter() - started) / len(rows)
        pool = min(max(SIZES), int(0.6 * len(rows)))  # training labels come from here; the rest is the test
        test = np.arange(pool, len(rows))
        cells = []
        for n in SIZES:
            if n > pool:
                cells.append(f"{'-':>13}")
                continue
            scores = []
            for seed in range(args.seeds):
                train = np.random.default_rng(seed).permutation(pool)[:n]
                if len(set(labels[train])) < 2:
                    continue
                tfidf = _pipeline().fit(texts[train], labels[train]).predict(texts[test])
                probe = _probe().fit(vectors[train], labels[train]).predict(vectors[test])
                scores.append(((tfidf == labels[test]).mean(), (probe == labels[test]).mean()))
            a, b = np.mean(scores, axis=0)
            cells.append(f"{a:.3f} / {b:.3f}".rjust(13))
        majority = max(np.mean(labels[test] == y) for y in set(labels))
        print(f"{name:8} {len(rows):5d} " + " ".join(cells) + f" {per_item:12.3f}   (majority {majority:.3f})", flush=True)


if __name__ == "__main__":
    main()
