"""The review queue: leases on items, within each item's overlap, and their expiry.

Each item goes to at most `overlap` reviewers (submitted plus leased: Decision.review_count
keeps that number, so finding an open item reads an index, not every task); leases expire and
the item returns to the queue; items closest to done come first, in random order. Now and then a reviewer is handed
a gold item instead, unmarked, to measure them; some items are shown blind. What reviewers do
with a lease (answer, skip, undo) is review_ui.answers.
"""

from __future__ import annotations

import functools
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, case, delete, func, insert, or_, select, update

from labeler.errors import LabelerError
from labeler.store import models
from labeler.store.engine import retry_deadlock, write_transaction
from labeler.store.models import Role, Split, State, utcnow
from labeler.store.users import Member
from labeler.store.workspace import Workspace
from review_ui import qualification

GOLD_NEAREST = 5  # hidden gold drawn from this many nearest in confidence to the item it stands in for
_ORDER = random.Random()  # the order open items are offered in
BUSY_RETRIES = 20
EXPERTS = (Role.expert, Role.admin)

Task, Decision, Item, User = models.ReviewTask, models.Decision, models.Item, models.User
Membership = models.Membership


class Busy(Exception):
    """Every open item was locked by another reviewer's transaction: look again in a moment."""


class _Recent:
    """Values computed at most every `seconds` per key, in this process: what steers the queue but need not be
    exact to the moment (a reviewer's accuracy per label, where a level's item ids begin and end)."""

    def __init__(self, seconds: float):
        self.seconds, self.values = seconds, {}

    def get(self, key, compute):
        at, value = self.values.get(key, (None, None))
        if at is None or time.monotonic() - at >= self.seconds:
            value = compute()
            self.values[key] = (time.monotonic(), value)
        return value


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
    details: dict | None = None  # the item's decision details as leased: the machines' view, answers so far


def lease_next(ws: Workspace, user: Member, *, overlap: int | None = None,
               lease_minutes: float | None = None, gold_share: float | None = None) -> Lease | None:
    """The user's current lease, or a new one on the open item closest to done; None: nothing to do."""
    for attempt in range(BUSY_RETRIES):
        try:
            return _lease_next(ws, user, overlap, lease_minutes, gold_share)
        except Busy:
            time.sleep(0.01 * (attempt + 1) * random.random())
    return None  # still all busy: the client asks again later


@retry_deadlock
def _lease_next(ws: Workspace, user: Member, overlap: int | None, lease_minutes: float | None,
                gold_share: float | None) -> Lease | None:
    with write_transaction(ws.engine) as c:
        return lease_in(c, ws, user, overlap=overlap, lease_minutes=lease_minutes, gold_share=gold_share)


def lease_in(c, ws: Workspace, user: Member, *, overlap: int | None = None, lease_minutes: float | None = None,
             gold_share: float | None = None) -> Lease | None:
    """lease_next inside the caller's write transaction (a submit's: one lock and one commit per answer);
    raises Busy when every open item was held by another reviewer's transaction."""
    routing = ws.config.routing
    overlap = overlap or routing.review_overlap
    now = utcnow()
    expires = now + timedelta(minutes=lease_minutes or routing.review_lease_minutes)
    gold_share = routing.review_gold_share if gold_share is None else gold_share
    _drop_expired(c, now)
    held = c.execute(_HELD, {"user": user.id, "now": now, "project": ws.project_id}).first()
    if held:
        return lease_of(c, held.id)
    if user.role not in EXPERTS and (gate := qualification.gate(c, ws, user)) is not None:
        item_id = qualification.next_item(c, ws, user, gate.attempt) if gate.attempt else None
        if item_id is None:
            return None  # cooling down after a failed attempt (or no gold to qualify on)
        count_review(c, item_id, +1)
        return lease_of(c, _new_task(c, item_id, user, now, expires, blind=True, attempt=gate.attempt))
    taken = _take_open_item(c, ws, user, overlap, now)
    if taken is None:
        return None
    item_id, suggested = taken
    if user.role not in EXPERTS and random.random() < gold_share:
        gold = _unseen_gold(c, ws, user, like=item_id)
        if gold is not None:  # hand out the gold item instead; the open item keeps its slot
            count_review(c, item_id, -1)
            count_review(c, gold, +1)
            item_id, suggested = gold, c.execute(select(_SUGGESTED).where(Decision.item_id == gold)).scalar()
    share = ws.config.routing.review_blind_share
    blind = user.role not in EXPERTS and share > 0 and random.random() < share
    return lease_of(c, _new_task(c, item_id, user, now, expires, blind=blind, suggested=suggested))


_HELD = (select(Task.id).join(Item, Item.id == Task.item_id)
         .where(Task.user_id == bindparam("user"), Task.submitted_at.is_(None), Task.skipped_at.is_(None),
                Task.expires_at > bindparam("now"), Item.project_id == bindparam("project")).limit(1))


def _new_task(c, item_id: int, user: Member, now: datetime, expires: datetime, *, blind: bool,
              attempt: int | None = None, suggested: str | None = None) -> int:
    """A lease row, with what the screen will show of the machines: the suggestion is kept as shown."""
    if blind:
        suggested = None
    return c.execute(_NEW_TASK, {"item_id": item_id, "user_id": user.id, "leased_at": now, "expires_at": expires,
                                 "blind": blind, "suggested": suggested, "qualification_id": attempt}).scalar_one()


_NEW_TASK = insert(Task).returning(Task.id)


def count_review(c, item_id: int, change: int) -> None:
    """Keep Decision.review_count equal to the item's task rows (skips excepted)."""
    c.execute(_COUNT, {"item": item_id, "change": change})


_COUNT = update(Decision).where(Decision.item_id == bindparam("item")).values(
    review_count=Decision.review_count + bindparam("change"))


_SUGGESTED = Decision.details[("machine", "label")].as_string()
WINDOW = 40  # index entries of one level a lease reads: the work per lease is bounded, whatever the backlog


@dataclass(frozen=True)
class _Level:
    """Open items of one queue level: needs_review with `count` reviews so far, or escalated (count None)."""

    state: State
    count: int | None = None

    def queries(self) -> "_Queries":
        return _queries(self.count is None)

    def params(self, ws: Workspace, user: Member, now: datetime, **more) -> dict:
        return {"project": ws.project_id, "state": self.state, "count": self.count, "user": user.id, "now": now, **more}


@dataclass(frozen=True)
class _Queries:
    first: Any  # up to :limit item ids of the level in index order
    last: Any  # the level's last item id
    from_pivot: Any  # up to :limit from item id :pivot on
    below_pivot: Any  # up to :limit below :pivot
    taken: Any  # of :ids, those not open to :user
    search: Any  # up to :limit items open to :user, however far into the level
    claim: Any  # item :item with its suggested label, locked, if still open to :user (PostgreSQL)
    peek: Any  # item :item with its suggested label


@functools.cache
def _queries(escalated: bool) -> _Queries:
    """A level's statements, built once (building one costs as much as running it), bound at each run."""
    level = and_(Decision.project_id == bindparam("project"), Decision.state == bindparam("state"))
    if not escalated:
        level = and_(level, Decision.review_count == bindparam("count"))
    # Kept from the user: an item they have had a task on, and for an escalated item one expert on it already
    # (whoever reviewed it before; an expert's "I don't know" frees it).
    kept = select(Task.id).where(Task.item_id == Decision.item_id, Task.user_id == bindparam("user")).exists()
    if escalated:
        expert_on_it = (
            select(Task.id).join(Membership, (Membership.user_id == Task.user_id)
                                 & (Membership.project_id == bindparam("project")))
            .where(Task.item_id == Decision.item_id, Membership.role.in_(EXPERTS), Task.skipped_at.is_(None),
                   or_(and_(Task.submitted_at.is_(None), Task.expires_at > bindparam("now")), Task.label.is_not(None)))
            .exists())
        kept = or_(kept, expert_on_it)
    ids = select(Decision.item_id).where(level)
    limit = bindparam("limit")
    ordered = ids.order_by(Decision.review_count, Decision.item_id) if escalated else ids.order_by(Decision.item_id)
    one = select(Decision.item_id, _SUGGESTED).where(Decision.item_id == bindparam("item"))
    return _Queries(
        first=ordered.limit(limit), last=ids.order_by(Decision.item_id.desc()).limit(1),
        from_pivot=ordered.where(Decision.item_id >= bindparam("pivot")).limit(limit),
        below_pivot=ordered.where(Decision.item_id < bindparam("pivot")).limit(limit),
        taken=select(Decision.item_id).where(Decision.item_id.in_(bindparam("ids", expanding=True)), kept),
        search=select(Decision.item_id).where(level, ~kept).order_by(Decision.item_id).limit(limit),
        claim=one.where(level, ~kept).with_for_update(skip_locked=True), peek=one)


def _take_open_item(c, ws: Workspace, user: Member, overlap: int, now: datetime) -> tuple[int, str | None] | None:
    """Claim a slot on an open item (count it) and return the item with the machines' suggested label;
    experts look at escalated items first.

    Items closest to done come first, one level of review_count at a time. Each level is read from the
    queue index a window at a time (from a random point, or from the start in import order), so a lease
    costs the same at a thousand items as at a million. Only when no window held an item open to this user
    is a level searched whole: the end of the queue, where what is left is the user's own or taken."""
    levels = [_Level(State.escalated)] if user.role in EXPERTS else []
    levels += [_Level(State.needs_review, n) for n in reversed(range(overlap))]
    shuffled = ws.config.routing.review_order == "random"
    busy, partial = False, []
    for level in levels:
        ids, whole = _window(c, ws, user, level, now, shuffled)
        if not whole:
            partial.append(level)
        found, locked = _claim(c, ws, user, level, _open_to(c, ws, user, ids, level, now), now)
        if found is not None:
            return found
        busy |= locked
    for level in partial:  # near the end of the queue: the whole level, searched by the store
        found, locked = _claim(c, ws, user, level, _search(c, ws, user, level, now), now)
        if found is not None:
            return found
        busy |= locked
    if busy:
        raise Busy
    return None


def _window(c, ws: Workspace, user: Member, level: _Level, now: datetime, shuffled: bool) -> tuple[list[int], bool]:
    """Up to WINDOW item ids of a level in index order: from a random item id (wrapping round) when shuffled,
    else from the first; and whether that is the whole level. Hidden gold is drawn at random too, so in
    random order the order items arrive in says nothing of which are gold. Escalated items (few) go to
    experts in order."""
    queries, params = level.queries(), level.params(ws, user, now, limit=WINDOW + 1)
    pivot = None
    if shuffled and level.count is not None:
        low, high = _bounds.get((str(c.engine.url), ws.project_id, level), lambda: (
            c.execute(queries.first, params | {"limit": 1}).scalar(), c.execute(queries.last, params).scalar()))
        pivot = None if low is None else _ORDER.randint(low, high)
    if pivot is None:
        ids = c.execute(queries.first, params).scalars().all()
    else:
        ids = c.execute(queries.from_pivot, params | {"pivot": pivot}).scalars().all()
        if len(ids) <= WINDOW:
            ids += c.execute(queries.below_pivot, params | {"pivot": pivot, "limit": WINDOW + 1 - len(ids)}).scalars().all()
    whole = len(ids) <= WINDOW
    ids = ids[:WINDOW]
    if pivot is not None:
        _ORDER.shuffle(ids)
    return ids, whole


_bounds = _Recent(5.0)  # a level's first and last item id: where a random window may start


def _open_to(c, ws: Workspace, user: Member, ids: list[int], level: _Level, now: datetime) -> list[int]:
    """Of the ids, those still open to this user (in their order). Read from the index and
    the user's tasks: the few taken are read, not the many open (whose rows would be read whole)."""
    if not ids:
        return []
    taken = set(c.execute(level.queries().taken, level.params(ws, user, now, ids=ids)).scalars())
    return [i for i in ids if i not in taken]


def _search(c, ws: Workspace, user: Member, level: _Level, now: datetime) -> list[int]:
    """Up to WINDOW items of a level open to this user, however far into the level they lie."""
    return c.execute(level.queries().search, level.params(ws, user, now, limit=WINDOW)).scalars().all()


def _claim(c, ws: Workspace, user: Member, level: _Level, candidates: list[int],
           now: datetime) -> tuple[tuple[int, str | None] | None, bool]:
    """Count a slot on the first candidate still open (the reviewer's most accurate likely label first);
    returns it with its suggested label, and whether some candidates were held by other reviewers'
    transactions (or taken since)."""
    skill = _label_skill(c, ws, user) if candidates else {}
    if skill:  # among them, the items whose likely label this reviewer is most accurate on come first
        suggested = dict(c.execute(select(Decision.item_id, _SUGGESTED).where(Decision.item_id.in_(candidates))).all())
        candidates = sorted(candidates, key=lambda i: -skill.get(suggested.get(i), min(skill.values())))
    if c.dialect.name == "sqlite":  # the lists above were read under the write lock this transaction holds
        claim, candidates = level.queries().peek, candidates[:1]
    else:  # locked and checked again in one read: the lists above came from an older snapshot
        claim = level.queries().claim
    params = level.params(ws, user, now)
    for item_id in candidates:
        row = c.execute(claim, params | {"item": item_id}).first()
        if row is None:
            continue  # another reviewer is taking or settling it right now, or took it since
        count_review(c, item_id, +1)
        return tuple(row), False
    return None, bool(candidates)


SKILL_HISTORY = 10  # hidden gold answers per label before a reviewer's accuracy on it steers the queue


def _label_skill(c, ws: Workspace, user: Member) -> dict[str, float]:
    """The reviewer's accuracy on hidden gold, per gold label, where there is enough history for two labels
    (read at most every few seconds per reviewer: it moves with their answers on gold, a tenth of them or so)."""
    return _skills.get((str(c.engine.url), ws.project_id, user.id), lambda: _read_label_skill(c, ws, user))


_skills = _Recent(10.0)


def _read_label_skill(c, ws: Workspace, user: Member) -> dict[str, float]:
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
    because its fold's model scored it) would be a tell; so the gold shown follows the queue's own mix.
    Read from the project's gold decisions (their range of the queue index), not from its items."""
    view = Decision.details[("machine",)]
    asked, reason, confidence = (view["asked"].as_string(), view["reason"].as_string(), view["confidence"].as_float())
    want = c.execute(select(asked, reason, confidence).where(Decision.item_id == like)).one()
    Gold = models.GoldLabel
    seen = select(Task.id).where(Task.item_id == Decision.item_id, Task.user_id == user.id).exists()
    query = (select(Decision.item_id).join(Gold, Gold.item_id == Decision.item_id)
             .where(Decision.project_id == ws.project_id, Decision.state == State.gold, Gold.split != Split.examples,
                    ~seen, view["review"].as_boolean().is_(True), _same(asked, want[0]), _same(reason, want[1])))
    nearest = query.order_by(func.abs(confidence - want[2]) if want[2] is not None else func.random()).limit(GOLD_NEAREST)
    found = c.execute(nearest).scalars().all()
    return _ORDER.choice(found) if found else None


def _same(expression, value):
    return expression.is_(None) if value is None else expression == value


_LEASE = (select(Task.item_id, Item.external_id, Item.fields, Task.expires_at, Task.blind, Task.qualification_id,
                 Decision.details).join(Item, Item.id == Task.item_id)
          .outerjoin(Decision, Decision.item_id == Task.item_id).where(Task.id == bindparam("task")))


def lease_of(c, task_id: int) -> Lease:
    row = c.execute(_LEASE, {"task": task_id}).one()
    return Lease(task_id, row.item_id, row.external_id, row.fields, row.expires_at, row.blind, row.qualification_id,
                 row.details)


def lock_decision(c, item_id: int) -> None:
    if c.dialect.name == "postgresql":  # one settler per item at a time
        c.execute(_LOCK, {"item": item_id})


_LOCK = select(Decision.item_id).where(Decision.item_id == bindparam("item")).with_for_update()




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
COUNTING_SHARE = 0.01  # and at most this share of the time spent counting (0.9 s at a million on PostgreSQL)
_waiting: dict[tuple, tuple[float, float, int]] = {}  # per store and project: when counted, how long it took, how many
_counting: set[tuple] = set()
_counting_lock = threading.Lock()


def progress(ws: Workspace, user: Member) -> dict:
    """The reviewer's progress: items they answered, and items waiting for people in the project."""
    with ws.engine.connect() as c:
        mine = c.scalar(_ANSWERED, {"project": ws.project_id, "user": user.id})
    return {"answered": int(mine or 0), "waiting": _waiting_count(ws)}


_ANSWERED = select(func.count()).select_from(Task).join(Item, Item.id == Task.item_id).where(
    Item.project_id == bindparam("project"), Task.user_id == bindparam("user"), Task.submitted_at.is_not(None))


def _waiting_count(ws: Workspace) -> int | None:
    """Items waiting for people in the project, counted in the background at most every WAITING_SECONDS per
    project and process, and less often when a count is slow (None until first counted): a count reads the
    project's whole backlog, and at a million items no answer should wait for it, nor share the store with it
    more than COUNTING_SHARE of the time."""
    key = (str(ws.engine.url), ws.project_id)
    at, took, count = _waiting.get(key, (None, 0.0, None))
    if at is None or time.monotonic() - at >= max(WAITING_SECONDS, took / COUNTING_SHARE):
        with _counting_lock:
            start = key not in _counting
            _counting.add(key)
        if start:
            threading.Thread(target=_count_waiting, args=(ws, key), daemon=True).start()
    return count


def _count_waiting(ws: Workspace, key: tuple) -> None:
    try:
        started = time.monotonic()
        with ws.engine.connect() as c:
            count = c.scalar(select(func.count()).select_from(Decision).where(
                Decision.project_id == ws.project_id, Decision.state.in_([State.needs_review, State.escalated])))
        _waiting[key] = (started, time.monotonic() - started, int(count or 0))
    except Exception:  # the store is away for now: the old count stands, and the next look tries again
        pass
    finally:
        with _counting_lock:
            _counting.discard(key)


def drop_leases(c, *conditions) -> int:
    """Delete unanswered leases matching `conditions`, freeing their slots; returns how many."""
    items = c.execute(delete(Task).where(Task.submitted_at.is_(None), Task.skipped_at.is_(None), *conditions)
                      .returning(Task.item_id)).scalars().all()
    for item, n in sorted(Counter(items).items()):  # in item order: two sweeps never wait on each other in a cycle
        count_review(c, item, -n)
    return len(items)




def _drop_expired(c, now: datetime) -> int:
    """Drop leases past their expiry, so their items return to the queue (a cheap indexed look first, so
    most calls write nothing); returns how many."""
    if c.execute(_ANY_EXPIRED, {"now": now}).first() is None:
        return 0
    return drop_leases(c, Task.expires_at <= now)


_ANY_EXPIRED = select(Task.id).where(Task.submitted_at.is_(None), Task.skipped_at.is_(None),
                                     Task.expires_at <= bindparam("now")).limit(1)


def expire_leases(ws: Workspace) -> int:
    """Drop leases past their expiry, so their items return to the queue; returns how many."""
    with write_transaction(ws.engine) as c:
        return _drop_expired(c, utcnow())
