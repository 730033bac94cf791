"""Decisions from votes: aggregate each item's current votes and set its state."""

from __future__ import annotations

from sqlalchemy import select

from labeler import models
from labeler.models import State, utcnow
from labeler.store import upsert
from labeler.workspace import Workspace
from routing.majority_vote import MajorityVote
from routing.votes import VoteTable

SETTLED = (State.gold, State.confirmed, State.escalated)


def current_votes(ws: Workspace) -> list[tuple[int, str, str | None, dict | None]]:
    """(item id, annotator name, label, probs): each annotator's newest vote per item."""
    Vote, Item, Annotator = models.Vote, models.Item, models.Annotator
    with ws.session() as s:
        rows = s.execute(
            select(Vote.item_id, Annotator.name, Vote.label, Vote.probs)
            .join(Item, Item.id == Vote.item_id)
            .join(Annotator, Annotator.id == Vote.annotator_id)
            .where(Item.project_id == ws.project_id)
            .order_by(Vote.id)
        ).all()
    newest = {(item_id, name): (item_id, name, label, probs) for item_id, name, label, probs in rows}
    return list(newest.values())


def decide_by_majority(ws: Workspace) -> dict[str, int]:
    """Majority vote over the non-abstaining votes: unanimous (2+ votes) is `auto`, else `needs_review`."""
    votes = [(i, n, label) for i, n, label, _ in current_votes(ws) if label is not None]
    if not votes:
        return {}
    table = VoteTable.from_records(votes, ws.config.label_names)
    probs = MajorityVote().fit_predict_proba(table)
    counts = table.counts().sum(axis=1)
    with ws.session() as s:
        settled = set(s.scalars(select(models.Decision.item_id).where(models.Decision.state.in_(SETTLED))))
        rows, now = [], utcnow()
        for t, item_id in enumerate(table.task_names):
            item_id = int(item_id)
            if item_id in settled:
                continue
            best = int(probs[t].argmax())
            unanimous = probs[t, best] == 1.0 and counts[t] >= 2
            rows.append({
                "item_id": item_id, "label": table.label_names[best], "confidence": float(probs[t, best]),
                "state": State.auto if unanimous else State.needs_review, "method": "majority",
                "details": {"votes": int(counts[t])}, "updated_at": now,
            })
        upsert(s, models.Decision, rows, keys=["item_id"])
    states = [r["state"].value for r in rows]
    return {state: states.count(state) for state in set(states)}
