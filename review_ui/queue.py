"""The review queue: leases on items, within each item's overlap, and their expiry.

Each item goes to at most `overlap` reviewers (submitted plus leased: Decision.review_count
keeps that number, so finding an open item reads an index, not every task); leases expire and
the item returns to the queue; items closest to done come first, in random order. Now and then a reviewer is handed
a gold item instead, unmarked, to measure them; some items are shown blind. What reviewers do
with a lease (answer, skip, undo) is review_ui.answers.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, case, delete, func, insert, or_, select, update

from labeler.errors import LabelerError
from labeler.store import models
from labeler.store.engine import retry_deadlock, write_transaction
from labeler.store.models import Role, Split, State, utcnow
from labeler.store.users import Member
from labeler.store.workspace import Workspace
from review_ui import qualification

CANDIDATES = 50  # open items examined per lease attempt
GOLD_NEAREST = 5  # hidden gold drawn from this many nearest in confidence to the item it stands in for
_ORDER = random.Random()  # the order open items are offered in
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
            return lease_of(c, held.id)
        if user.role not in EXPERTS and (gate := qualification.gate(c, ws, user)) is not None:
            item_id = qualification.next_item(c, ws, user, gate.attempt) if gate.attempt else None
            if item_id is None:
                return None  # cooling down after a failed attempt (or no gold to qualify on)
            count_review(c, item_id, +1)
            return lease_of(c, _new_task(c, item_id, user, now, expires, blind=True, attempt=gate.attempt))
        item_id = _take_open_item(c, ws, user, overlap, now)
        if item_id is None:
            return None
        if user.role not in EXPERTS and random.random() < gold_share:
            gold = _unseen_gold(c, ws, user, like=item_id)
            if gold is not None:  # hand out the gold item instead; the open item keeps its slot
                count_review(c, item_id, -1)
                count_review(c, gold, +1)
                item_id = gold
        share = ws.config.routing.review_blind_share
        blind = user.role not in EXPERTS and share > 0 and random.random() < share
        return lease_of(c, _new_task(c, item_id, user, now, expires, blind=blind))


def _new_task(c, item_id: int, user: Member, now: datetime, expires: datetime, *, blind: bool,
              attempt: int | None = None) -> int:
    """A lease row, with what the screen will show of the machines: the suggestion is kept as shown."""
    machine = (c.execute(select(Decision.details).where(Decision.item_id == item_id)).scalar() or {}).get("machine", {})
    return c.execute(insert(Task).values(
        item_id=item_id, user_id=user.id, leased_at=now, expires_at=expires, blind=blind,
        suggested=None if blind else machine.get("label"), qualification_id=attempt).returning(Task.id)).scalar_one()


def count_review(c, item_id: int, change: int) -> None:
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
        candidates = _candidates(c, level, open_now, suggested, ws.config.routing.review_order == "random")
        if skill:  # among them, the items whose likely label this reviewer is most accurate on come first
            candidates = sorted(candidates, key=lambda row: -skill.get(row[1], min(skill.values())))
        for candidate, _ in candidates:
            this = select(Decision.item_id).where(Decision.item_id == candidate)
            if c.dialect.name == "postgresql" and c.execute(this.with_for_update(skip_locked=True)).first() is None:
                busy = True  # another reviewer is taking or settling it right now
                continue
            # Checked again now that the row is ours: the list above came from an older snapshot.
            if c.execute(this.where(open_now)).first():
                count_review(c, candidate, +1)
                return candidate
    if busy:
        raise _Busy
    return None


def _candidates(c, level, open_now, suggested, shuffled: bool) -> list:
    """Up to CANDIDATES open items of a level in import order, or in random order: the run of item ids
    from a random point (wrapping round), shuffled. Hidden gold is drawn at random too, so in random
    order the order items arrive in says nothing of which are gold. Both read the queue index."""
    query = select(Decision.item_id, suggested).where(open_now).order_by(Decision.item_id).limit(CANDIDATES)
    if not shuffled:
        return c.execute(query).all()
    low, high = c.execute(select(func.min(Decision.item_id), func.max(Decision.item_id)).where(level)).one()
    if low is None:
        return []
    pivot = _ORDER.randint(low, high)
    found = c.execute(query.where(Decision.item_id >= pivot)).all()
    if len(found) < CANDIDATES:
        found += c.execute(query.where(Decision.item_id < pivot).limit(CANDIDATES - len(found))).all()
    _ORDER.shuffle(found)
    return found


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


def _unseen_gold(c, ws: Workspace, user: Member, like: int) -> int | None:
    """A gold item (not a few-shot example) this user has never been shown, that stands in for the open
    item `like`: one the machines would have sent to review, with the same annotators asked and the same
    reason, and of the gold that does, one of the nearest in confidence. A gold card unlike the cards real
    items make (a confidence no review item has, no votes, a reason or a vote count that only gold gets
    because its fold's model scored it) would be a tell; so the gold shown follows the queue's own mix."""
    view = Decision.details[("machine",)]
    asked, reason, confidence = (view["asked"].as_string(), view["reason"].as_string(), view["confidence"].as_float())
    want = c.execute(select(asked, reason, confidence).where(Decision.item_id == like)).one()
    seen = select(Task.id).where(Task.item_id == models.GoldLabel.item_id, Task.user_id == user.id).exists()
    query = (select(models.GoldLabel.item_id).join(Item, Item.id == models.GoldLabel.item_id)
             .join(Decision, Decision.item_id == models.GoldLabel.item_id)
             .where(Item.project_id == ws.project_id, models.GoldLabel.split != Split.examples, ~seen,
                    view["review"].as_boolean().is_(True), _same(asked, want[0]), _same(reason, want[1])))
    nearest = query.order_by(func.abs(confidence - want[2]) if want[2] is not None else func.random()).limit(GOLD_NEAREST)
    found = c.execute(nearest).scalars().all()
    return _ORDER.choice(found) if found else None


def _same(expression, value):
    return expression.is_(None) if value is None else expression == value


def lease_of(c, task_id: int) -> Lease:
    row = c.execute(select(Task.item_id, Item.external_id, Item.fields, Task.expires_at, Task.blind,
                           Task.qualification_id).join(Item, Item.id == Task.item_id).where(Task.id == task_id)).one()
    return Lease(task_id, row.item_id, row.external_id, row.fields, row.expires_at, row.blind, row.qualification_id)


def lock_decision(c, item_id: int) -> None:
    if c.dialect.name == "postgresql":  # one settler per item at a time
        c.execute(select(Decision.item_id).where(Decision.item_id == item_id).with_for_update())




def waiting(ws: Workspace, user: Member) -> str | None:
    """Why a reviewer gets no item, when it is not an empty queue: a qualification cool-down, or items that
    other reviewers hold (how many, and when the first comes back if they do not answer)."""
    if user.role not in EXPERTS:
        with write_transaction(ws.engine) as c:
            gate = qualification.gate(c, ws, user)
        if gate is not None:
            return gate.message
    with ws.session() as s:
        held, back = s.execute(
            select(func.count(func.distinct(Task.item_id)), func.min(Task.expires_at)).join(Item, Item.id == Task.item_id)
            .where(Item.project_id == ws.project_id, Task.user_id != user.id, Task.submitted_at.is_(None),
                   Task.skipped_at.is_(None), Task.expires_at > utcnow())).one()
    if not held:
        return None
    return (f"Nothing left for you now: {held} item{'s are' if held > 1 else ' is'} with other reviewers; "
            f"the first comes back at {back:%H:%M} UTC if not answered by then.")


WAITING_SECONDS = 15.0  # how stale the screen's count of waiting items may be (counting them reads the backlog)
_waiting: dict[tuple, tuple[float, int]] = {}


def progress(ws: Workspace, user: Member) -> dict:
    """The reviewer's progress: items they answered, and items waiting for people in the project (counted at
    most every WAITING_SECONDS per project and process: at a million items a count is no per-answer cost)."""
    with ws.session() as s:
        mine = s.scalar(select(func.count()).select_from(Task).join(Item, Item.id == Task.item_id).where(
            Item.project_id == ws.project_id, Task.user_id == user.id, Task.submitted_at.is_not(None)))
        key = (str(ws.engine.url), ws.project_id)
        at, count = _waiting.get(key, (-WAITING_SECONDS, 0))
        if time.monotonic() - at >= WAITING_SECONDS:
            count = int(s.scalar(select(func.count()).select_from(Decision).join(Item, Item.id == Decision.item_id)
                                 .where(Item.project_id == ws.project_id,
                                        Decision.state.in_([State.needs_review, State.escalated]))) or 0)
            _waiting[key] = (time.monotonic(), count)
    return {"answered": int(mine or 0), "waiting": count}




def drop_leases(c, *conditions) -> int:
    """Delete unanswered leases matching `conditions`, freeing their slots; returns how many."""
    items = c.execute(delete(Task).where(Task.submitted_at.is_(None), Task.skipped_at.is_(None), *conditions)
                      .returning(Task.item_id)).scalars().all()
    for item, n in sorted(Counter(items).items()):  # in item order: two sweeps never wait on each other in a cycle
        count_review(c, item, -n)
    return len(items)




def expire_leases(ws: Workspace) -> int:
    """Drop leases past their expiry, so their items return to the queue; returns how many."""
    expired = (Task.expires_at <= utcnow(),)
    with ws.session() as s:  # a cheap look first (an index covers it), so most calls write nothing
        if s.execute(select(Task.id).where(Task.submitted_at.is_(None), Task.skipped_at.is_(None), *expired)
                     .limit(1)).first() is None:
            return 0
    with write_transaction(ws.engine) as c:
        return drop_leases(c, *expired)


