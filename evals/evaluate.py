"""`labeler eval`: annotators and prompt versions on gold, each measured, side by side."""

from __future__ import annotations

import asyncio
from itertools import combinations
from typing import Any, Callable

import numpy as np
from sqlalchemy import select

from evals.compare import compare
from evals.metrics import (
    classification,
    confidence_quality,
    label_set_classification,
    percentiles,
    set_confidence,
    span_classification,
    span_set_confidence,
)
from labeler.annotators.runner import run_askers
from labeler.config import LLMAnnotator, LocalAnnotator, RecordedAnnotator
from labeler.errors import LabelerError
from labeler.store import models
from labeler.store.workspace import Workspace
from prompts.annotators import build_asker, ordered


def entries(ws: Workspace, annotators: list[str] | None, prompts: list[str] | None) -> list[tuple[str, Any]]:
    """(name, asker) for each annotator, and for each prompt version of the LLM ones."""
    configs = [c for c in ws.config.annotators if not isinstance(c, RecordedAnnotator)]
    if annotators:
        unknown = sorted(set(annotators) - {c.name for c in configs})
        if unknown:
            raise LabelerError(f"unknown annotator(s): {', '.join(unknown)}")
        configs = [c for c in configs if c.name in annotators]
    ids = ws.annotator_ids()
    out = []
    for config in ordered(configs):
        versions = prompts if prompts and isinstance(config, (LLMAnnotator, LocalAnnotator)) else [None]
        for version in versions:
            asker = build_asker(ws, config, ids[config.name], prompt=version)
            label = getattr(getattr(asker, "task", None), "name", None) or asker.version
            out.append((f"{config.name}@{label}", asker))
    return out


def gold_items(ws: Workspace) -> dict[int, str]:
    """Gold that is not shown in prompts: calibration and honeypots."""
    with ws.session() as s:
        return dict(s.execute(
            select(models.GoldLabel.item_id, models.GoldLabel.label)
            .join(models.Item, models.Item.id == models.GoldLabel.item_id)
            .where(models.Item.project_id == ws.project_id, models.GoldLabel.split != models.Split.examples)
        ).all())


def measure(ws: Workspace, asker, gold: dict[int, str]) -> tuple[dict, np.ndarray]:
    Vote = models.Vote
    with ws.session() as s:
        rows = {r.item_id: r for r in s.scalars(select(Vote).where(
            Vote.annotator_id == asker.annotator_id, Vote.version == asker.version, Vote.item_id.in_(list(gold))))}
    items = sorted(gold)
    truth = [gold[i] for i in items]
    predicted = [rows[i].label if i in rows else None for i in items]
    right = np.array([p == t for p, t in zip(predicted, truth)])
    labels = ws.config.label_names
    sets = ws.task.key == "labels"
    if sets:  # how sure it is of the whole set
        confidence = [set_confidence(rows[i].probs, labels) if i in rows and rows[i].label is not None else None
                      for i in items]
    elif ws.task.key == "spans":
        confidence = [span_set_confidence(rows[i].label, rows[i].probs) if i in rows else None for i in items]
    else:
        confidence = [max(rows[i].probs.values()) if i in rows and rows[i].probs and rows[i].label else None for i in items]
    voted = [rows[i] for i in items if i in rows]
    target = ws.config.routing.target_accuracy
    scoring = {"labels": label_set_classification, "spans": span_classification}.get(ws.task.key, classification)
    report = scoring(truth, predicted, labels)
    report |= {
        "asked": len(voted),
        "abstention_rate": round(sum(v.label is None for v in voted) / len(voted), 4) if voted else None,
        "parse_failure_rate": round(sum(v.abstain_reason == "unparsable" for v in voted) / len(voted), 4) if voted else None,
        "confidence": confidence_quality(confidence, list(right), target),
        "cost_per_1000": round(sum(v.cost for v in voted) / len(voted) * 1000, 6) if voted else None,
        "latency_ms": percentiles([v.latency_ms for v in voted if v.latency_ms]),
    }
    return report, right


def evaluate(ws: Workspace, annotators: list[str] | None = None, prompts: list[str] | None = None,
             baseline: str | None = None, on_answer: Callable | None = None) -> dict:
    chosen = entries(ws, annotators, prompts)
    gold = gold_items(ws)
    if not gold:
        raise LabelerError("no gold of split calibration or honeypot to evaluate on; `labeler import gold FILE`")
    with ws.session() as s:
        run = models.Run(project_id=ws.project_id, kind="eval")
        s.add(run)
        s.flush()
        run_id = run.id
    asyncio.run(run_askers(ws, [a for _, a in chosen], sorted(gold), run_id=run_id, on_answer=on_answer))
    results, right = {}, {}
    for name, asker in chosen:
        results[name], right[name] = measure(ws, asker, gold)
    pairs = _pairs(list(results), baseline)
    comparisons = [{"a": a, "b": b, **compare(right[a], right[b])} | {"differ": _differ(ws, gold, right[a], right[b])}
                   for a, b in pairs]
    return {"run_id": run_id, "gold_items": len(gold), "target_accuracy": ws.config.routing.target_accuracy,
            "entries": results, "comparisons": comparisons}


def _pairs(names: list[str], baseline: str | None) -> list[tuple[str, str]]:
    """Against the baseline when given (an entry name, or a version name per annotator); else versions of one annotator."""
    if baseline:
        base = [n for n in names if n == baseline or n.split("@", 1)[1] == baseline]
        if not base:
            raise LabelerError(f"baseline {baseline!r} is not among the evaluated entries: {', '.join(names)}")
        return [(b, n) for b in base for n in names
                if n != b and (n.split("@")[0] == b.split("@")[0] or baseline == b)]
    return [(a, b) for a, b in combinations(names, 2) if a.split("@")[0] == b.split("@")[0]] or list(combinations(names, 2))


def _differ(ws: Workspace, gold: dict, a_right, b_right, most: int = 20) -> list[str]:
    items = sorted(gold)
    ids = [items[i] for i in np.nonzero(np.asarray(a_right) != np.asarray(b_right))[0][:most]]
    with ws.session() as s:
        names = dict(s.execute(select(models.Item.id, models.Item.external_id).where(models.Item.id.in_(ids))).all())
    return [names[i] for i in ids]


def worse_than_baseline(report: dict) -> list[str]:
    return [c["b"] for c in report["comparisons"] if c["verdict"] == "worse"]
