"""What the review screen shows for a lease: the item, the machines' votes, their suggestion."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select

from labeler import models
from labeler.workspace import Workspace
from review_ui.queue import EXPERTS, Lease
from review_ui.schemas import Card, MachineVote


def card(ws: Workspace, lease: Lease | None, user: models.User) -> Card | None:
    if lease is None:
        return None
    Vote, Annotator = models.Vote, models.Annotator
    with ws.session() as s:
        rows = s.execute(
            select(Annotator.name, Vote.label, Vote.probs, Vote.version).join(Annotator, Annotator.id == Vote.annotator_id)
            .where(Vote.item_id == lease.item_id).order_by(Vote.id)
        ).all()
        decision = s.get(models.Decision, lease.item_id)
    newest = {name: (label, probs, version) for name, label, probs, version in rows}  # later versions win
    votes = [MachineVote(annotator=name, label=label, version=version,
                         probability=round(probs[label], 3) if probs and label in probs else None)
             for name, (label, probs, version) in newest.items()]
    if decision is not None and decision.state != models.State.gold:
        suggestion, confidence = decision.details.get("machine", {}).get("label", decision.label), decision.confidence
    else:
        # A hidden gold item (or one never run): its stored label is the answer, so only the votes speak.
        counts = Counter(v.label for v in votes if v.label)
        suggestion, confidence = (counts.most_common(1)[0][0] if counts else None), None
    answers = decision.details.get("decided_by", []) if decision is not None and user.role in EXPERTS else []
    return Card(task_id=lease.task_id, item_id=lease.item_id, external_id=lease.external_id, fields=lease.fields,
                suggestion=suggestion, confidence=confidence, votes=votes, answers=answers,
                expires_at=lease.expires_at.isoformat())
