"""A team's first project, timed as they would type it: init, import, ask the gold, calibrate, run.

    python bench/first_project.py [--items 1000] [--gold-share 0.667] [--features auto] [DATASET]

Makes a project from a set in ../shared/datasets (default sst2: 872 short sentences, two labels;
weather: 300 tweets, five labels) with `labeler init --items --gold` and its default annotators
(the classifier and the embedded model), imports it (`--gold-share` of the items as gold, 15 % of
that as honeypots), then times each command in its own process, start included:

    labeler calibrate          (fresh: says what it needs, asks nobody)
    labeler run --limit 0      (asks every annotator about the calibration gold)
    labeler calibrate          (fits the levels, says what more gold would buy)
    labeler run                (the new items)

and prints each command's seconds, the classifier's time embedding (from its progress), and what
calibrate certified.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
TEXT = {"sst2": "text", "weather": "tweet_body"}


def write_sets(folder: Path, name: str, items: int, gold_share: float) -> tuple[Path, Path]:
    rows = list(csv.DictReader((DATASETS / name / "items.csv").open()))
    labels = {r["task"]: r["label"] for r in csv.DictReader((DATASETS / name / "gold.csv").open())}
    rows = [r for r in rows if r["task"] in labels]
    random.Random(0).shuffle(rows)
    rows = rows[:items]
    gold = rows[: round(gold_share * len(rows))]
    items_file, gold_file = folder / "items.csv", folder / "gold.csv"
    with items_file.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "text"])
        writer.writerows([r["task"], r[TEXT[name]]] for r in rows)
    with gold_file.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "label"])
        writer.writerows([r["task"], labels[r["task"]]] for r in gold)
    return items_file, gold_file


def labeler(project: Path, *args: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "labeler.cli", *args, "--project", str(project)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"labeler {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - started, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dataset", nargs="?", default="sst2", choices=sorted(TEXT))
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--gold-share", type=float, default=0.667)
    parser.add_argument("--features", default="auto", choices=["auto", "tfidf", "embeddings"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        items, gold = write_sets(folder, args.dataset, args.items, args.gold_share)
        project = folder / "project"
        subprocess.run([sys.executable, "-m", "labeler.cli", "init", str(project), "--items", str(items),
                        "--gold", str(gold)], check=True, capture_output=True)
        yaml = project / "labeler.yaml"
        yaml.write_text(yaml.read_text().replace("    kind: model\n", f"    kind: model\n    features: {args.features}\n"))
        labeler(project, "import", "items", str(items))
        labeler(project, "import", "gold", str(gold), "--honeypot-share", "0.15")
        print(f"{args.dataset}: {sum(1 for _ in items.open()) - 1} items, {sum(1 for _ in gold.open()) - 1} gold "
              f"(15 % honeypots), classifier features: {args.features}", flush=True)
        total = 0.0
        for step in (("calibrate", "--json"), ("run", "--limit", "0", "--json"), ("calibrate", "--json"), ("run", "--json")):
            seconds, output = labeler(project, *step)
            total += seconds
            result = json.loads(output) if output.strip().startswith("{") else {}
            said = ""
            if step[0] == "calibrate" and result.get("ready", True):
                said = (f"level {result.get('lambda')}, calibrated accuracy {result.get('calibrated_accuracy')}"
                        + (f"; {result['reason']}, passes now: {result.get('max_target')}" if result.get("reason") else ""))
            elif step[0] == "calibrate":
                said = f"not ready: {result.get('reason')}"
            elif "states" in result or "decisions" in result:
                said = f"decisions: {result.get('decisions') or result.get('states')}"
            print(f"  labeler {' '.join(s for s in step if s != '--json'):22s} {seconds:6.1f} s  {said}", flush=True)
        print(f"  all four commands: {total:.1f} s")


if __name__ == "__main__":
    main()
