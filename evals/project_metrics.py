"""How a project is doing: one function for `labeler metrics` and, later, the review UI's manager page."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from sqlalchemy import func, select

from evals.agreement import fleiss_kappa, krippendorff_alpha, pairwise_span_f1
from evals.drift import detect_drift
from labeler.data.exports import project_status
from labeler.store import models
from labeler.store.workspace import Workspace

DONE = ("auto", "confirmed", "gold")


def newest_answers(ws: Workspace) -> dict[tuple[int, int], str]:
    """(item, annotator) -> the annotator's newest answer on the item (abstentions left out)."""
    Vote, Item = models.Vote, models.Item
    with ws.session() as s:
        rows = s.execute(
            select(Vote.item_id, Vote.annotator_id, Vote.label).join(Item, Item.id == Vote.item_id)
            .where(Item.project_id == ws.project_id, Vote.label.is_not(None)).order_by(Vote.id)
        ).all()
    return {(item, annotator): label for item, annotator, label in rows}


def agreement_counts(ws: Workspace) -> np.ndarray:
    """Items x labels: how many annotators (each one's newest non-abstaining vote) chose each label."""
    labels = ws.config.label_names
    index = {label: k for k, label in enumerate(labels)}
    newest = {key: label for key, label in newest_answers(ws).items() if label in index}
    by_item: dict[int, np.ndarray] = defaultdict(lambda: np.zeros(len(labels)))
    for (item, _), label in newest.items():
        by_item[item][index[label]] += 1
    return np.array(list(by_item.values())) if by_item else np.zeros((0, len(labels)))


def span_agreement(ws: Workspace) -> dict:
    """Pairwise span F1 between annotators (each one's newest answer per item), over the items two or more answered."""
    by_item: dict[int, dict] = defaultdict(dict)
    for (item, annotator), label in newest_answers(ws).items():
        by_item[item][annotator] = set(ws.task.parts(label))
    shared = [answers for answers in by_item.values() if len(answers) >= 2]
    f1 = pairwise_span_f1(shared)
    return {"items": len(shared), "pairwise_span_f1": round(f1, 4) if f1 is not None else None}


def honeypot_history(ws: Workspace) -> dict[str, list[dict]]:
    """Each annotator's honeypot accuracy per run, oldest first."""
    with ws.session() as s:
        runs = s.scalars(select(models.Run).where(models.Run.project_id == ws.project_id, models.Run.kind == "run")
                         .order_by(models.Run.id)).all()
    history: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        for name, check in (run.stats or {}).get("honeypots", {}).items():
            history[name].append({"run": run.id, "at": run.started_at.isoformat(), "accuracy": check["accuracy"],
                                  "honeypots": check["honeypots"], "bad_day": bool(check.get("bad_day"))})
    return dict(history)


def project_metrics(ws: Workspace) -> dict:
    status = project_status(ws)
    states = status["states"]
    decided_by_machine = states["auto"] + states["needs_review"] + states["confirmed"] + states["escalated"]
    counts = agreement_counts(ws)
    equal = counts[counts.sum(axis=1) >= 2]
    same_raters = len(equal) and np.allclose(equal.sum(axis=1), equal.sum(axis=1)[0])
    with ws.session() as s:
        reviewers = s.execute(
            select(models.User.name, func.count(models.ReviewTask.id))
            .join(models.ReviewTask, models.ReviewTask.user_id == models.User.id)
            .join(models.Item, models.Item.id == models.ReviewTask.item_id)
            .where(models.Item.project_id == ws.project_id, models.ReviewTask.submitted_at.is_not(None))
            .group_by(models.User.name)
        ).all()
    return {
        "project": status["project"],
        "items": status["items"],
        "states": states,
        "completion_rate": round(sum(states[s] for s in DONE) / status["items"], 4) if status["items"] else None,
        "automatic_share": round(states["auto"] / decided_by_machine, 4) if decided_by_machine else None,
        "backlog": states["needs_review"] + states["escalated"] + states["unlabeled"],
        "labels_per_annotator": {a["name"]: a["votes"] - a["abstentions"] for a in status["annotators"]},
        "labels_per_reviewer": dict(reviewers),
        "spend": status["spend"],
        "budget": status["budget"],
        "agreement": span_agreement(ws) if ws.config.task == "spans" else {
            "items": int(len(equal)),
            "fleiss_kappa": round(fleiss_kappa(equal), 4) if same_raters and fleiss_kappa(equal) is not None else None,
            "krippendorff_alpha": round(krippendorff_alpha(counts), 4) if krippendorff_alpha(counts) is not None else None,
        },
        "honeypots": honeypot_history(ws),
        "drift": detect_drift(ws),
    }
