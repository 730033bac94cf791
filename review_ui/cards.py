"""What the review screen shows for a lease: the item, the machines' votes, their suggestion."""

from __future__ import annotations

from sqlalchemy import bindparam, func, select

from labeler.store import models
from labeler.store.users import Member
from labeler.store.workspace import Workspace
from review_ui.queue import EXPERTS, Lease
from review_ui.schemas import Card, MachineVote

BLIND = "a blind item: the machines' view is hidden, so it measures your own judgement"


_VOTES = (select(models.Annotator.name, models.Vote.label, models.Vote.probs, models.Vote.version)  # built once
          .join(models.Annotator, models.Annotator.id == models.Vote.annotator_id)
          .where(models.Vote.item_id == bindparam("item")).order_by(models.Vote.id))


def card(ws: Workspace, lease: Lease | None, user: Member) -> Card | None:
    """The item and the machines' view of it: the same for every item, a hidden gold one included (the run
    gives gold items the view a new item with their votes would get), except on blind items, which show none."""
    if lease is None:
        return None
    with ws.engine.connect() as c:
        rows = c.execute(_VOTES, {"item": lease.item_id}).all()
        names = _version_names(c, ws, {row.version for row in rows})
        progress = None
        if lease.qualification is not None:
            done = c.scalar(select(func.count()).select_from(models.ReviewTask).where(
                models.ReviewTask.qualification_id == lease.qualification, models.ReviewTask.submitted_at.is_not(None)))
            of = c.scalar(select(models.Qualification.items).where(models.Qualification.id == lease.qualification))
            progress = {"answered": done, "of": of}
    details = lease.details or {}
    machine = details.get("machine", {})
    if "asked" in machine:  # the votes the run's cascade bought for it, the same rule for gold and new items
        shown = {tuple(pair) for pair in machine["asked"]}
        rows = [row for row in rows if (row.name, row.version) in shown]
    newest = {name: (label, probs, version) for name, label, probs, version in rows}  # later versions win
    task = ws.task
    text = lease.fields.get(ws.config.fields[0])  # spans are shown with their text
    text = text if isinstance(text, str) else None
    votes = [MachineVote(annotator=name, label=task.exported(label, text), version=names.get(version, version),
                         probability=round(probs[label], 3) if probs and label in probs else None)
             for name, (label, probs, version) in newest.items()]
    answers = details.get("decided_by", []) if user.role in EXPERTS else []
    common = dict(task_id=lease.task_id, item_id=lease.item_id, external_id=lease.external_id, fields=lease.fields,
                  answers=answers, expires_at=lease.expires_at.isoformat(), qualification=progress, task=task.name)
    if lease.blind:
        return Card(**common, suggestion=None, confidence=None, votes=[], reason=BLIND, blind=True)
    sure = machine.get("confidence") is not None and machine["confidence"] >= ws.config.routing.review_preselect_min
    return Card(**common, suggestion=task.exported(machine.get("label"), text), confidence=machine.get("confidence"),
                preselect=machine.get("label") is not None and sure,
                label_confidence=machine.get("label_confidence"), votes=votes, reason=machine.get("reason"), blind=False)


_names: dict[tuple, tuple[dict[str, str], set[str]]] = {}  # per store and project: names by hash, versions looked up


def _version_names(c, ws: Workspace, versions: set[str]) -> dict[str, str]:
    """Readable names of prompt versions (immutable once made: read again only when a version not looked up
    before turns up; a model's fingerprint has no name and stays as it is)."""
    key = (str(ws.engine.url), ws.project_id)
    names, looked_up = _names.get(key, ({}, set()))
    if not versions <= looked_up:
        PromptVersion = models.PromptVersion
        names = dict(c.execute(select(PromptVersion.content_hash, PromptVersion.name)
                               .where(PromptVersion.project_id == ws.project_id)).all())
        _names[key] = names, looked_up | versions
    return names
