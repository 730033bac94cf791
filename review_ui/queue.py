"""The review queue: leases on items, idempotent submissions, undo, and settling an item's reviews.

Each item goes to at most `overlap` reviewers (submitted plus leased: Decision.review_count
keeps that number, so finding an open item reads an index, not every task); leases expire and
the item returns to the queue; items closest to done come first. Now and then a reviewer is handed
a gold item instead, unmarked, to measure them. A submission carries an id made by the client,
so a retried submit counts once. When an item has `overlap` answers that agree it is confirmed;
disagreement or an "I don't know" sends it to the experts; an expert's answer settles it.
Every answer and undo is written to the audit log in the same transaction.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, case, delete, func, insert, or_, select, update

from labeler import audit, models
from labeler.errors import LabelerError
from labeler.models import Role, Split, State, utcnow
from labeler.store import retry_deadlock, write_transaction
from labeler.users import Member
from labeler.workspace import Workspace
from review_ui import qualification

CANDIDATES = 50  # open items examined per lease attempt
BUSY_RETRIES = 20
EXPERTS = (Role.expert, Role.admin)

Task, Decision, Item, User = models.ReviewTask, models.Decision, models.Item, models.User
Membership = models.Membership


class _Busy(Exception):
    """Every open item was locked by another reviewer's transaction: look again in a moment."""


class Conflict(LabelerError):
    """The request is valid but the queue's state refuses it (no lease, someone answered after you)."""


@dataclass(frozen=True)
class Lease:
    task_id: int
    item_id: int
    external_id: str
    fields: dict
    expires_at: datetime
    blind: bool = False  # shown with no machine view
    qualification: int | None = None  # the qualification attempt it belongs to


def lease_next(ws: Workspace, user: Member, *, overlap: int | None = None,
               lease_minutes: float | None = None, gold_share: float | None = None) -> Lease | None:
    """The user's current lease, or a new one on the open item closest to done; None: nothing to do."""
    routing = ws.config.routing
    overlap = overlap or routing.review_overlap
    expires = utcnow() + timedelta(minutes=lease_minutes or routing.review_lease_minutes)
    gold_share = routing.review_gold_share if gold_share is None else gold_share
    expire_leases(ws)
    for attempt in range(BUSY_RETRIES):
        try:
            return _lease_next(ws, user, overlap, expires, gold_share)
        except _Busy:
            time.sleep(0.01 * (attempt + 1) * random.random())
    return None  # still all busy: the client asks again later


@retry_deadlock
def _lease_next(ws: Workspace, user: Member, overlap: int, expires: datetime, gold_share: float) -> Lease | None:
    now = utcnow()
    with write_transaction(ws.engine) as c:
        held = c.execute(
            select(Task.id, Task.item_id, Task.expires_at).join(Item, Item.id == Task.item_id)
            .where(Task.user_id == user.id, Task.submitted_at.is_(None), Task.skipped_at.is_(None),
                   Task.expires_at > now, Item.project_id == ws.project_id).limit(1)
        ).first()
        if held:
            return _lease(c, held.id)
        if user.role not in EXPERTS and (gate := qualification.gate(c, ws, user)) is not None:
            item_id = qualification.next_item(c, ws, user, gate.attempt) if gate.attempt else None
            if item_id is None:
                return None  # cooling down after a failed attempt (or no gold to qualify on)
            _count(c, item_id, +1)
            return _lease(c, _new_task(c, item_id, user, now, expires, blind=True, attempt=gate.attempt))
        item_id = _take_open_item(c, ws, user, overlap, now)
        if item_id is None:
            return None
        if user.role not in EXPERTS and random.random() < gold_share:
            gold = _unseen_gold(c, ws, user)
            if gold is not None:  # hand out the gold item instead; the open item keeps its slot
                _count(c, item_id, -1)
                _count(c, gold, +1)
                item_id = gold
        share = ws.config.routing.review_blind_share
        blind = user.role not in EXPERTS and share > 0 and random.random() < share
        return _lease(c, _new_task(c, item_id, user, now, expires, blind=blind))


def _new_task(c, item_id: int, user: Member, now: datetime, expires: datetime, *, blind: bool,
              attempt: int | None = None) -> int:
    """A lease row, with what the screen will show of the machines: the suggestion is kept as shown."""
    machine = (c.execute(select(Decision.details).where(Decision.item_id == item_id)).scalar() or {}).get("machine", {})
    return c.execute(insert(Task).values(
        item_id=item_id, user_id=user.id, leased_at=now, expires_at=expires, blind=blind,
        suggested=None if blind else machine.get("label"), qualification_id=attempt).returning(Task.id)).scalar_one()


def _count(c, item_id: int, change: int) -> None:
    """Keep Decision.review_count equal to the item's task rows (skips excepted)."""
    c.execute(update(Decision).where(Decision.item_id == item_id).values(review_count=Decision.review_count + change))


def _take_open_item(c, ws: Workspace, user: Member, overlap: int, now: datetime) -> int | None:
    """Claim a slot on an open item (count it) and return the item; experts look at escalated items first."""
    mine = select(Task.id).where(Task.item_id == Decision.item_id, Task.user_id == user.id).exists()
    in_project = select(Item.id).where(Item.id == Decision.item_id, Item.project_id == ws.project_id).exists()
    # One expert per escalated item, whoever reviewed it before; an expert's "I don't know" frees it.
    expert_on_it = (
        select(Task.id).join(Membership, (Membership.user_id == Task.user_id) & (Membership.project_id == ws.project_id))
        .where(Task.item_id == Decision.item_id, Membership.role.in_(EXPERTS), Task.skipped_at.is_(None),
               or_(and_(Task.submitted_at.is_(None), Task.expires_at > now), Task.label.is_not(None)))
        .exists()
    )
    levels = []
    if user.role in EXPERTS:
        levels.append(and_(Decision.state == State.escalated, ~expert_on_it))
    # Items closest to done first: one level of review_count at a time, each read in index order.
    levels += [and_(Decision.state == State.needs_review, Decision.review_count == n) for n in reversed(range(overlap))]
    busy = False
    skill = _label_skill(c, ws, user)
    suggested = Decision.details[("machine", "label")].as_string()
    for level in levels:
        open_now = and_(level, ~mine, in_project)
        candidates = c.execute(select(Decision.item_id, suggested).where(open_now).order_by(Decision.item_id)
                               .limit(CANDIDATES)).all()
        if skill:  # among them, the items whose likely label this reviewer is most accurate on come first
            candidates = sorted(candidates, key=lambda row: -skill.get(row[1], min(skill.values())))
        for candidate, _ in candidates:
            this = select(Decision.item_id).where(Decision.item_id == candidate)
            if c.dialect.name == "postgresql" and c.execute(this.with_for_update(skip_locked=True)).first() is None:
                busy = True  # another reviewer is taking or settling it right now
                continue
            # Checked again now that the row is ours: the list above came from an older snapshot.
            if c.execute(this.where(open_now)).first():
                _count(c, candidate, +1)
                return candidate
    if busy:
        raise _Busy
    return None


SKILL_HISTORY = 10  # hidden gold answers per label before a reviewer's accuracy on it steers the queue


def _label_skill(c, ws: Workspace, user: Member) -> dict[str, float]:
    """The reviewer's accuracy on hidden gold, per gold label, where there is enough history for two labels."""
    Gold = models.GoldLabel
    rows = c.execute(
        select(Gold.label, func.count(), func.sum(case((Task.label == Gold.label, 1), else_=0)))
        .join(Task, Task.item_id == Gold.item_id).join(Item, Item.id == Task.item_id)
        .where(Task.user_id == user.id, Item.project_id == ws.project_id, Task.submitted_at.is_not(None),
               Task.qualification_id.is_(None))
        .group_by(Gold.label)).all()
    skill = {label: right / n for label, n, right in rows if n >= SKILL_HISTORY}
    return skill if len(skill) >= 2 else {}


def _unseen_gold(c, ws: Workspace, user: Member) -> int | None:
    """A gold item (not a few-shot example) this user has never been shown, and that looks like the items
    reviewers get: one that a run has scored and the machines would have sent to review. A gold item the
    machines would accept shows a confidence no real review item has; one never scored shows no votes:
    either would be a tell."""
    seen = select(Task.id).where(Task.item_id == models.GoldLabel.item_id, Task.user_id == user.id).exists()
    like_review = Decision.details[("machine", "review")].as_boolean().is_(True)
    return c.execute(
        select(models.GoldLabel.item_id).join(Item, Item.id == models.GoldLabel.item_id)
        .join(Decision, Decision.item_id == models.GoldLabel.item_id)
        .where(Item.project_id == ws.project_id, models.GoldLabel.split != Split.examples, ~seen, like_review)
        .order_by(func.random()).limit(1)
    ).scalar()


def _lease(c, task_id: int) -> Lease:
    row = c.execute(select(Task.item_id, Item.external_id, Item.fields, Task.expires_at, Task.blind,
                           Task.qualification_id).join(Item, Item.id == Task.item_id).where(Task.id == task_id)).one()
    return Lease(task_id, row.item_id, row.external_id, row.fields, row.expires_at, row.blind, row.qualification_id)


def _lock_decision(c, item_id: int) -> None:
    if c.dialect.name == "postgresql":  # one settler per item at a time
        c.execute(select(Decision.item_id).where(Decision.item_id == item_id).with_for_update())


@retry_deadlock
def submit(ws: Workspace, user: Member, item_id: int, *, label: str | None, client_id: str,
           reason: str | None = None, overlap: int | None = None) -> dict:
    """Record the user's answer (None with a reason: "I don't know"); a retry with the same client id is a no-op."""
    if label is not None and label not in ws.config.label_names:
        raise LabelerError(f"unknown label {label!r}")
    if label is None and not (reason or "").strip():
        raise LabelerError("'I don't know' needs a reason")
    written = reason is not None and reason.strip() not in ws.config.routing.review_dont_know_reasons \
        and len(reason.strip()) >= 10
    if label is None and not written and over_dont_know_cap(ws, user):
        raise LabelerError("you are over the share of 'I don't know' answers this project allows: "
                           "write in your own words why this item cannot be labeled")
    if not client_id.strip():
        raise LabelerError("a submission needs a client id")
    overlap = overlap or ws.config.routing.review_overlap
    with write_transaction(ws.engine) as c:
        _lock_decision(c, item_id)
        done = c.execute(select(Task.id).where(Task.user_id == user.id, Task.client_id == client_id)).first()
        if done:
            return {"status": "duplicate", "task_id": done[0]}
        task = c.execute(
            select(Task.id, Task.qualification_id).join(Item, Item.id == Task.item_id)
            .where(Task.user_id == user.id, Task.item_id == item_id, Task.submitted_at.is_(None),
                   Task.skipped_at.is_(None), Task.expires_at > utcnow(), Item.project_id == ws.project_id)
            .order_by(Task.id.desc()).limit(1)
        ).first()
        if task is None:  # never leased, skipped, expired (its slot may have gone to someone else), another project's
            raise Conflict("no live lease on this item: ask for the next item")
        c.execute(update(Task).where(Task.id == task[0]).values(
            submitted_at=utcnow(), client_id=client_id, label=label, reason=reason))
        state = _settle(c, ws, item_id, overlap)
        audit.record(c, "review.submit", user_id=user.id, item_id=item_id, label=label, reason=reason, state=state)
        if task.qualification_id is not None:
            qualification.answered(c, ws, user, task.qualification_id)
        elif state == "gold" and qualification.check_pause(c, ws, user):
            _drop_leases(c, Task.user_id == user.id)  # paused: their other leases go back to the queue
        return {"status": "recorded", "task_id": task[0], "state": state}


def waiting(ws: Workspace, user: Member) -> str | None:
    """Why a reviewer gets no item, when it is not an empty queue: a qualification cool-down."""
    if user.role in EXPERTS:
        return None
    with write_transaction(ws.engine) as c:
        gate = qualification.gate(c, ws, user)
    return gate.message if gate is not None else None


DONT_KNOW_WINDOW = 50  # a reviewer's last answers over which the share of "I don't know" is counted


def dont_know_share(ws: Workspace, user_id: int) -> tuple[float, int]:
    """The share of "I don't know" among a reviewer's last answers in this project, and how many answers."""
    with ws.session() as s:
        labels = s.scalars(select(Task.label).join(Item, Item.id == Task.item_id)
                           .where(Task.user_id == user_id, Item.project_id == ws.project_id, Task.submitted_at.is_not(None))
                           .order_by(Task.submitted_at.desc()).limit(DONT_KNOW_WINDOW)).all()
    return (sum(label is None for label in labels) / len(labels) if labels else 0.0), len(labels)


def over_dont_know_cap(ws: Workspace, user: Member) -> bool:
    share, answers = dont_know_share(ws, user.id)
    return answers >= 10 and share >= ws.config.routing.review_dont_know_cap


@retry_deadlock
def skip(ws: Workspace, user: Member, item_id: int) -> None:
    """Give the lease back: the item's slot frees now, and the item stays out of this user's queue."""
    with write_transaction(ws.engine) as c:
        _lock_decision(c, item_id)  # the decision row first, as submit does: one lock order, no deadlock
        in_project = select(Item.id).where(Item.id == item_id, Item.project_id == ws.project_id).exists()
        skipped = c.execute(
            update(Task).where(Task.user_id == user.id, Task.item_id == item_id, Task.submitted_at.is_(None),
                               Task.skipped_at.is_(None), in_project)
            .values(skipped_at=utcnow(), expires_at=utcnow()).returning(Task.item_id)).scalars().all()
        for item in skipped:
            _count(c, item, -1)


def _drop_leases(c, *conditions) -> int:
    """Delete unanswered leases matching `conditions`, freeing their slots; returns how many."""
    items = c.execute(delete(Task).where(Task.submitted_at.is_(None), Task.skipped_at.is_(None), *conditions)
                      .returning(Task.item_id)).scalars().all()
    for item, n in sorted(Counter(items).items()):  # in item order: two sweeps never wait on each other in a cycle
        _count(c, item, -n)
    return len(items)


@retry_deadlock
def undo(ws: Workspace, user: Member, *, overlap: int | None = None,
         lease_minutes: float | None = None) -> Lease:
    """Take back the user's newest answer and lease its item to them again; their current lease is returned."""
    overlap = overlap or ws.config.routing.review_overlap
    expires = utcnow() + timedelta(minutes=lease_minutes or ws.config.routing.review_lease_minutes)
    with write_transaction(ws.engine) as c:
        last = c.execute(
            select(Task.id, Task.item_id, Task.submitted_at, Task.label).join(Item, Item.id == Task.item_id)
            .where(Task.user_id == user.id, Task.submitted_at.is_not(None), Item.project_id == ws.project_id)
            .order_by(Task.submitted_at.desc(), Task.id.desc()).limit(1)
        ).first()
        if last is None:
            raise Conflict("nothing to undo")
        _lock_decision(c, last.item_id)
        later = c.execute(select(Task.id).where(Task.item_id == last.item_id, Task.id != last.id,
                                                Task.submitted_at > last.submitted_at)).first()
        if later:
            raise Conflict("someone answered this item after you; it can no longer be undone")
        _drop_leases(c, Task.user_id == user.id)
        c.execute(update(Task).where(Task.id == last.id).values(
            submitted_at=None, client_id=None, label=None, reason=None, leased_at=utcnow(), expires_at=expires))
        state = _settle(c, ws, last.item_id, overlap)
        audit.record(c, "review.undo", user_id=user.id, item_id=last.item_id, label=last.label, state=state)
        return _lease(c, last.id)


def _settle(c, ws: Workspace, item_id: int, overlap: int) -> str:
    """Set the item's state from all answers submitted so far (also after an undo)."""
    decision = c.execute(select(Decision).where(Decision.item_id == item_id)).first()
    if decision is None or decision.state == State.gold:
        return "gold"  # a hidden gold item: the answer measures the reviewer and settles nothing
    details = dict(decision.details or {})
    machine = details.setdefault("machine", {"label": decision.label})
    machine.setdefault("method", decision.method)  # what to go back to if every answer is undone
    answers = c.execute(
        select(Task.label, Task.reason, User.name, Membership.role).join(User, User.id == Task.user_id)
        .join(Membership, (Membership.user_id == User.id) & (Membership.project_id == ws.project_id))
        .where(Task.item_id == item_id, Task.submitted_at.is_not(None)).order_by(Task.submitted_at, Task.id)
    ).all()
    experts = [a for a in answers if a.role in EXPERTS and a.label is not None]
    reviews = [a for a in answers if a.role not in EXPERTS]
    if experts:
        values = {"label": experts[-1].label, "state": State.confirmed, "method": "expert"}
    elif any(a.label is None for a in answers) or len({a.label for a in reviews}) > 1:
        values = {"label": machine["label"], "state": State.escalated, "method": "review"}
    elif len(reviews) >= overlap:
        values = {"label": reviews[0].label, "state": State.confirmed, "method": "review"}
    else:
        values = {"label": machine["label"], "state": State.needs_review, "method": machine["method"]}
    details["decided_by"] = [{"user": a.name, "role": a.role.value, "label": a.label, "reason": a.reason}
                             for a in answers]
    c.execute(update(Decision).where(Decision.item_id == item_id).values(**values, updated_at=utcnow(), details=details))
    return values["state"].value


def expire_leases(ws: Workspace) -> int:
    """Drop leases past their expiry, so their items return to the queue; returns how many."""
    expired = (Task.expires_at <= utcnow(),)
    with ws.session() as s:  # a cheap look first (an index covers it), so most calls write nothing
        if s.execute(select(Task.id).where(Task.submitted_at.is_(None), Task.skipped_at.is_(None), *expired)
                     .limit(1)).first() is None:
            return 0
    with write_transaction(ws.engine) as c:
        return _drop_leases(c, *expired)


@retry_deadlock
def promote_to_gold(ws: Workspace, user: Member, item_id: int, label: str, split: Split) -> None:
    """An expert makes an item gold (calibration or honeypot) or a guideline example; it becomes its decision."""
    if label not in ws.config.label_names:
        raise LabelerError(f"unknown label {label!r}")
    with write_transaction(ws.engine) as c:
        if c.execute(select(Item.id).where(Item.id == item_id, Item.project_id == ws.project_id)).first() is None:
            raise LabelerError(f"no item {item_id} in this project")
        before = c.execute(select(models.GoldLabel.label, models.GoldLabel.split)
                           .where(models.GoldLabel.item_id == item_id)).first()
        if before:
            c.execute(update(models.GoldLabel).where(models.GoldLabel.item_id == item_id).values(label=label, split=split))
        else:
            c.execute(insert(models.GoldLabel).values(item_id=item_id, label=label, split=split, created_at=utcnow()))
        values = {"label": label, "confidence": 1.0, "state": State.gold, "method": "gold", "updated_at": utcnow()}
        if not c.execute(update(Decision).where(Decision.item_id == item_id).values(**values)).rowcount:
            c.execute(insert(Decision).values(item_id=item_id, details={}, **values))
        audit.record(c, "gold.add", user_id=user.id, item_id=item_id, label=label, split=split.value,
                     before=list(before) if before else None)
