"""The embedded local model (Gemma 3 270M) as an annotator: accuracy, per-label answers, speed.

    python bench/local_model.py [--items 300] [--shots-per-label 4] [DATASET ...]

Each dataset becomes a project as a user would make it (a guideline with a task paragraph and
one definition per label; `shots-per-label` gold items per label as few-shot examples; the rest,
up to `--items`, as calibration gold) and `labeler eval` measures the `local` annotator on it,
through the real path (prompt version, litellm, response cache). Printed per set: accuracy,
the majority-class rate, macro-F1, the confusion matrix (every label answered?), what a
per-label logistic correction fitted on gold would reach (5-fold, out of fold), and seconds
per item. Sets: sst2, weather and rte from ../shared/datasets, and `topics`, a 4-label news
set written for this project (tests/data/topics.csv).
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATASETS = ROOT.parent / "shared" / "datasets"
SETS = {  # task paragraph, item fields, label -> definition
    "sst2": ("Decide the sentiment of one sentence from a movie review.", ["text"],
             {"positive": "The sentence praises the film.", "negative": "The sentence criticises the film."}),
    "weather": ("Decide what a tweet says about the weather.", ["tweet_body"],
                {"negative": "Negative feelings about the weather.", "neutral": "About the weather, neither good nor bad.",
                 "positive": "Positive feelings about the weather.", "not_related": "Not about the weather.",
                 "cant_tell": "About the weather, but the feeling cannot be told."}),
    "rte": ("Decide whether the text entails the hypothesis (1) or not (0).", ["text", "hypothesis"],
            {"1": "The text entails the hypothesis.", "0": "The text does not entail the hypothesis."}),
    "topics": ("Decide the topic of one news headline.", ["text"],
               {"World": "Politics, conflicts, disasters and diplomacy.", "Sports": "Games, athletes and competitions.",
                "Business": "Companies, markets and the economy.", "Sci/Tech": "Science, technology and research."}),
}


def rows_of(name: str) -> list[tuple[str, dict, str]]:
    if name == "topics":
        with (ROOT / "tests" / "data" / "topics.csv").open(encoding="utf-8") as f:
            return [(r["id"], {"text": r["text"]}, r["label"]) for r in csv.DictReader(f)]
    fields = SETS[name][1]
    with (DATASETS / name / "items.csv").open(encoding="utf-8") as f:
        items = {r["task"]: r for r in csv.DictReader(f)}
    with (DATASETS / name / "gold.csv").open(encoding="utf-8") as f:
        return [(r["task"], {k: items[r["task"]][k] for k in fields}, r["label"]) for r in csv.DictReader(f)
                if r["task"] in items]


def make_project(folder: Path, name: str, n_items: int, shots: int, seed: int = 0):
    from labeler.data.imports import import_gold, import_items
    from labeler.store.workspace import open_workspace

    task, fields, labels = SETS[name]
    rows = rows_of(name)
    random.Random(seed).shuffle(rows)
    examples = [r for label in labels for r in [r for r in rows if r[2] == label][:shots]]
    rest = [r for r in rows if r not in examples][:n_items]
    yaml = (f"name: bench-{name}\nlabels:\n" + "".join(f"  '{k}': {v}\n" for k, v in labels.items())
            + f"fields: [{', '.join(fields)}]\nguidelines: guidelines.md\nprompt: {{shots: {shots * len(labels)}}}\n"
            + "annotators:\n  - {name: gemma, kind: local}\n")
    (folder / "labeler.yaml").write_text(yaml, encoding="utf-8")
    guide = f"# {name}\n\n{task}\n\n## Labels\n\n" + "".join(f"### {k}\n{v}\n\n" for k, v in labels.items())
    (folder / "guidelines.md").write_text(guide, encoding="utf-8")
    with (folder / "items.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", *fields])
        writer.writerows([r[0], *(r[1][k] for k in fields)] for r in examples + rest)
    with (folder / "gold.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "label", "split"])
        writer.writerows([r[0], r[2], "examples"] for r in examples)
        writer.writerows([r[0], r[2], "calibration"] for r in rest)
    ws = open_workspace(folder, url=f"sqlite:///{folder / 'labeler.db'}")
    import_items(ws, folder / "items.csv")
    import_gold(ws, folder / "gold.csv")
    return ws, list(labels)


def corrected_accuracy(ws, labels: list[str]) -> float:
    """A per-label logistic correction of the answers' log-probabilities, fitted on gold, out of fold."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from sqlalchemy import select

    from labeler.store import models

    with ws.session() as s:
        rows = s.execute(select(models.Vote.probs, models.GoldLabel.label)
                         .join(models.GoldLabel, models.GoldLabel.item_id == models.Vote.item_id)
                         .where(models.GoldLabel.split == models.Split.calibration)).all()
    rows = [(p, g) for p, g in rows if p]
    x = np.log(np.clip([[p[k] for k in labels] for p, _ in rows], 1e-9, None))
    y = np.array([labels.index(g) for _, g in rows])
    folds = min(5, int(np.bincount(y).min()))
    if folds < 2:
        return float("nan")
    return float((cross_val_predict(LogisticRegression(max_iter=2000), x, y, cv=folds) == y).mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--shots-per-label", type=int, default=4)
    parser.add_argument("datasets", nargs="*", default=list(SETS))
    args = parser.parse_args()
    from evals.evaluate import evaluate
    from labeler.annotators import local as local_llm

    local_llm.engine()  # loaded once, outside the timings
    print(f"{'set':8} {'items':>5} {'accuracy':>8} {'majority':>8} {'macro_f1':>8} {'corrected':>9} {'s/item':>7}")
    for name in args.datasets:
        with tempfile.TemporaryDirectory() as folder:
            ws, labels = make_project(Path(folder), name, args.items, args.shots_per_label)
            started = time.perf_counter()
            report = evaluate(ws)
            seconds = time.perf_counter() - started
            entry = next(iter(report["entries"].values()))
            counts = np.array(entry["confusion"]["matrix"])
            majority = counts.sum(axis=1).max() / counts.sum()
            print(f"{name:8} {report['gold_items']:5d} {entry['accuracy']:8.3f} {majority:8.3f} {entry['macro_f1']:8.3f} "
                  f"{corrected_accuracy(ws, labels):9.3f} {seconds / report['gold_items']:7.3f}")
            print("         confusion (rows: gold, columns: answered): " + ", ".join(entry["confusion"]["labels"]))
            for label, row in zip(entry["confusion"]["labels"], counts):
                print(f"         {label:>12} {' '.join(f'{c:4d}' for c in row)}")
            ws.engine.dispose()


if __name__ == "__main__":
    main()
