"""The review queue: leases on items, idempotent submissions, and settling an item's reviews.

Each item goes to at most `overlap` reviewers (submitted plus leased); leases expire and the
item returns to the queue; items closest to done come first. A submission carries an id made
by the client, so a retried submit counts once. When an item has `overlap` answers that agree
it is confirmed; disagreement or an "I don't know" sends it to the experts; an expert's answer
settles it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, case, func, insert, or_, select, update

from labeler import models
from labeler.errors import LabelerError
from labeler.models import Role, State, utcnow
from labeler.store import write_transaction
from labeler.workspace import Workspace

LEASE_MINUTES = 10.0
CANDIDATES = 50  # rows examined (and, on PostgreSQL, locked) per lease attempt

Task, Decision, Item = models.ReviewTask, models.Decision, models.Item


@dataclass(frozen=True)
class Lease:
    task_id: int
    item_id: int
    external_id: str
    fields: dict
    expires_at: object


def _states_for(role: Role) -> list[State]:
    return [State.escalated, State.needs_review] if role in (Role.expert, Role.admin) else [State.needs_review]


def lease_next(ws: Workspace, user: models.User, *, overlap: int | None = None,
               lease_minutes: float = LEASE_MINUTES) -> Lease | None:
    """The user's current lease, or a new one on the open item closest to done; None: nothing to do."""
    overlap = overlap or ws.config.routing.review_overlap
    now = utcnow()
    live = or_(Task.submitted_at.is_not(None), Task.expires_at > now)
    with write_transaction(ws.engine) as c:
        held = c.execute(
            select(Task.id, Task.item_id, Task.expires_at)
            .where(Task.user_id == user.id, Task.submitted_at.is_(None), Task.expires_at > now).limit(1)
        ).first()
        if held:
            return _lease(c, *held)
        taken = select(func.count()).where(Task.item_id == Decision.item_id, live).scalar_subquery()
        by_expert = (
            select(func.count()).select_from(Task).join(models.User, models.User.id == Task.user_id)
            .where(Task.item_id == Decision.item_id, live, models.User.role.in_([Role.expert, Role.admin]))
            .scalar_subquery()
        )
        mine = select(Task.id).where(Task.item_id == Decision.item_id, Task.user_id == user.id).exists()
        # Reviews up to the overlap on open items; one expert on an escalated item, whoever reviewed it before.
        open_slot = or_(and_(Decision.state == State.needs_review, taken < overlap),
                        and_(Decision.state == State.escalated, by_expert == 0))
        query = (
            select(Decision.item_id)
            .join(Item, Item.id == Decision.item_id)
            .where(Item.project_id == ws.project_id, Decision.state.in_(_states_for(user.role)), ~mine, open_slot)
            .order_by(taken.desc(), case((Decision.state == State.escalated, 0), else_=1), Decision.item_id)
            .limit(CANDIDATES)
        )
        if c.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True, of=Decision)
        item_id = None
        for candidate in c.execute(query).scalars():
            # Counted again now that the row is ours: the first count read a snapshot taken before
            # the lock, which may miss a lease another reviewer committed in between (PostgreSQL).
            if c.execute(select(Decision.item_id).where(Decision.item_id == candidate, open_slot)).first():
                item_id = candidate
                break
        if item_id is None:
            return None
        expires = now + timedelta(minutes=lease_minutes)
        task_id = c.execute(
            insert(Task).values(item_id=item_id, user_id=user.id, leased_at=now, expires_at=expires).returning(Task.id)
        ).scalar_one()
        return _lease(c, task_id, item_id, expires)


def _lease(c, task_id: int, item_id: int, expires) -> Lease:
    external_id, fields = c.execute(select(Item.external_id, Item.fields).where(Item.id == item_id)).one()
    return Lease(task_id, item_id, external_id, fields, expires)


def submit(ws: Workspace, user: models.User, item_id: int, *, label: str | None, client_id: str,
           reason: str | None = None, overlap: int | None = None) -> dict:
    """Record the user's answer (None with a reason: "I don't know"); a retry with the same client id is a no-op."""
    if label is not None and label not in ws.config.label_names:
        raise LabelerError(f"unknown label {label!r}")
    if label is None and not (reason or "").strip():
        raise LabelerError("'I don't know' needs a reason")
    overlap = overlap or ws.config.routing.review_overlap
    with write_transaction(ws.engine) as c:
        if c.dialect.name == "postgresql":  # one settler per item at a time
            c.execute(select(Decision.item_id).where(Decision.item_id == item_id).with_for_update())
        done = c.execute(select(Task.id).where(Task.user_id == user.id, Task.client_id == client_id)).first()
        if done:
            return {"status": "duplicate", "task_id": done[0]}
        task = c.execute(
            select(Task.id).where(Task.user_id == user.id, Task.item_id == item_id, Task.submitted_at.is_(None))
            .order_by(Task.id.desc()).limit(1)
        ).first()
        if task is None:
            raise LabelerError("no lease on this item: ask for the next item first")
        c.execute(update(Task).where(Task.id == task[0]).values(
            submitted_at=utcnow(), client_id=client_id, label=label, reason=reason))
        state = _settle(c, item_id, user, overlap)
        return {"status": "recorded", "task_id": task[0], "state": state}


def _settle(c, item_id: int, user: models.User, overlap: int) -> str:
    answers = c.execute(
        select(Task.label, Task.reason, models.User.name, models.User.role)
        .join(models.User, models.User.id == Task.user_id)
        .where(Task.item_id == item_id, Task.submitted_at.is_not(None)).order_by(Task.submitted_at)
    ).all()
    labels = [a.label for a in answers]
    values: dict = {}
    if user.role in (Role.expert, Role.admin) and labels[-1] is not None:
        values = {"label": labels[-1], "state": State.confirmed, "method": "expert"}
    elif labels[-1] is None or len(set(labels)) > 1:
        values = {"state": State.escalated, "method": "review"}
    elif len(labels) >= overlap:
        values = {"label": labels[0], "state": State.confirmed, "method": "review"}
    if values:
        c.execute(update(Decision).where(Decision.item_id == item_id).values(
            **values, updated_at=utcnow(),
            details={"decided_by": [{"user": a.name, "role": a.role.value, "label": a.label, "reason": a.reason}
                                    for a in answers]}))
        return values["state"].value
    return c.execute(select(Decision.state).where(Decision.item_id == item_id)).scalar_one().value


def expire_leases(ws: Workspace) -> int:
    """Drop leases past their expiry (they no longer count anyway); returns how many."""
    with write_transaction(ws.engine) as c:
        return c.execute(models.ReviewTask.__table__.delete().where(
            and_(Task.submitted_at.is_(None), Task.expires_at <= utcnow()))).rowcount
