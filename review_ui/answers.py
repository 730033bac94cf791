"""What reviewers do with a lease: answer (idempotent by a client id), skip, undo; and settling an item.

When an item has `overlap` answers that agree it is confirmed; disagreement or an "I don't know"
sends it to the experts; an expert's answer settles it. Every answer and undo is written to the
audit log in the same transaction. Every write locks the item's decision row before its tasks:
one lock order, so two sessions of one reviewer never deadlock.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import and_, bindparam, insert, select, update

from labeler.errors import LabelerError
from labeler.store import audit, models
from labeler.store.engine import retry_deadlock, write_transaction
from labeler.store.models import Split, State, utcnow
from labeler.store.users import Member
from labeler.store.workspace import Workspace
from review_ui import qualification
from review_ui.queue import (
    EXPERTS,
    Busy,
    Conflict,
    Decision,
    Item,
    Lease,
    Membership,
    Task,
    User,
    count_review,
    drop_leases,
    lease_in,
    lease_next,
    lease_of,
    lock_decision,
)


def answer_of(ws: Workspace, label: str | None, labels: list[str] | None, spans: list[dict] | None = None,
              item_id: int | None = None) -> str | None:
    """The stored form of a submitted answer: `label`, for a label set `labels`, for spans `spans` (checked
    against item `item_id`'s text); None: "I don't know"."""
    given = {name: value for name, value in (("label", label), ("labels", labels), ("spans", spans)) if value is not None}
    if len(given) > 1:
        raise LabelerError(f"send one of {' or '.join(given)}, not both")
    if not given:
        return None
    (name, value), = given.items()
    if name != "label" and name != ws.task.key:
        raise LabelerError(f"this project's answers are `{ws.task.key}`, not `{name}`")
    text = None
    if name == "spans" and item_id is not None:
        with ws.session() as s:
            item = s.get(models.Item, item_id)
            text = item.fields.get(ws.config.fields[0]) if item is not None and item.project_id == ws.project_id else None
    return _canonical(ws, value, text if isinstance(text, str) else None)


def _canonical(ws: Workspace, value, text: str | None = None) -> str:
    try:
        return ws.task.canonical(value, text)
    except ValueError as exc:
        raise LabelerError(str(exc)) from None


@retry_deadlock
def submit(ws: Workspace, user: Member, item_id: int, *, label: str | None, client_id: str,
           reason: str | None = None, overlap: int | None = None) -> dict:
    """Record the user's answer (None with a reason: "I don't know"); a retry with the same client id is a no-op."""
    label = _checked(ws, user, label, reason, client_id)
    with write_transaction(ws.engine) as c:
        return _record(c, ws, user, item_id, label, client_id, reason, overlap or ws.config.routing.review_overlap)


def submit_and_lease(ws: Workspace, user: Member, item_id: int, *, label: str | None, client_id: str,
                     reason: str | None = None) -> tuple[dict, Lease | None]:
    """submit, then the user's next lease in the same transaction: one lock and one commit per answer.
    When other reviewers' transactions hold every open item, the answer is kept and the lease is asked
    for again on its own."""
    label = _checked(ws, user, label, reason, client_id)

    @retry_deadlock
    def both():
        with write_transaction(ws.engine) as c:
            result = _record(c, ws, user, item_id, label, client_id, reason, ws.config.routing.review_overlap)
            try:
                return result, lease_in(c, ws, user), False
            except Busy:
                return result, None, True

    result, lease, busy = both()
    return result, lease_next(ws, user) if busy else lease


def _checked(ws: Workspace, user: Member, label: str | None, reason: str | None, client_id: str) -> str | None:
    """The answer in its stored form, or a one-line error for what may not be submitted."""
    if label is not None:
        label = _canonical(ws, label)
    if label is None and not (reason or "").strip():
        raise LabelerError("'I don't know' needs a reason")
    written = reason is not None and reason.strip() not in ws.config.routing.review_dont_know_reasons \
        and len(reason.strip()) >= 10
    if label is None and not written and over_dont_know_cap(ws, user):
        raise LabelerError("you are over the share of 'I don't know' answers this project allows: "
                           "write in your own words why this item cannot be labeled")
    if not client_id.strip():
        raise LabelerError("a submission needs a client id")
    return label


# The statements of every answer, built once (building one costs as much as running it): bound at each run.
_LIVE = and_(Task.submitted_at.is_(None), Task.skipped_at.is_(None), Task.expires_at > bindparam("now"))
_TASKS_ON_ITEM = (  # a user's tasks on an item: a few at most
    select(Task.id, Task.qualification_id, Task.client_id, _LIVE.label("live")).join(Item, Item.id == Task.item_id)
    .where(Task.user_id == bindparam("user"), Task.item_id == bindparam("item"), Item.project_id == bindparam("project"))
    .order_by(Task.id.desc()))
_ANSWER = update(Task).where(Task.id == bindparam("task"))
_DECISION = select(Decision.state, Decision.label, Decision.method, Decision.details).where(Decision.item_id == bindparam("item"))
_ANSWERS = (
    select(Task.label, Task.reason, User.name, Membership.role).join(User, User.id == Task.user_id)
    .join(Membership, (Membership.user_id == User.id) & (Membership.project_id == bindparam("project")))
    .where(Task.item_id == bindparam("item"), Task.submitted_at.is_not(None)).order_by(Task.submitted_at, Task.id))
_SETTLE = update(Decision).where(Decision.item_id == bindparam("item"))


def _record(c, ws: Workspace, user: Member, item_id: int, label: str | None, client_id: str, reason: str | None,
            overlap: int) -> dict:
    """The answer written inside the caller's transaction, and the item settled by the answers so far."""
    lock_decision(c, item_id)
    now = utcnow()
    tasks = c.execute(_TASKS_ON_ITEM, {"now": now, "user": user.id, "item": item_id, "project": ws.project_id}).all()
    done = next((t for t in tasks if t.client_id == client_id), None)
    if done:
        return {"status": "duplicate", "task_id": done.id}
    task = next((t for t in tasks if t.live), None)
    if task is None:  # never leased, skipped, expired (its slot may have gone to someone else), another project's
        raise Conflict("no live lease on this item: ask for the next item")
    c.execute(_ANSWER, {"task": task.id, "submitted_at": now, "client_id": client_id, "label": label, "reason": reason})
    state = _settle(c, ws, item_id, overlap)
    audit.record(c, "review.submit", user_id=user.id, project_id=ws.project_id, item_id=item_id, label=label, reason=reason, state=state)
    if task.qualification_id is not None:
        qualification.answered(c, ws, user, task.qualification_id)
    elif state == "gold" and qualification.check_pause(c, ws, user):
        drop_leases(c, Task.user_id == user.id)  # paused: their other leases go back to the queue
    return {"status": "recorded", "task_id": task.id, "state": state}




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
        lock_decision(c, item_id)  # the decision row first, as submit does: one lock order, no deadlock
        in_project = select(Item.id).where(Item.id == item_id, Item.project_id == ws.project_id).exists()
        skipped = c.execute(
            update(Task).where(Task.user_id == user.id, Task.item_id == item_id, Task.submitted_at.is_(None),
                               Task.skipped_at.is_(None), in_project)
            .values(skipped_at=utcnow(), expires_at=utcnow()).returning(Task.item_id)).scalars().all()
        for item in skipped:
            count_review(c, item, -1)




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
        lock_decision(c, last.item_id)
        later = c.execute(select(Task.id).where(Task.item_id == last.item_id, Task.id != last.id,
                                                Task.submitted_at > last.submitted_at)).first()
        if later:
            raise Conflict("someone answered this item after you; it can no longer be undone")
        drop_leases(c, Task.user_id == user.id)
        c.execute(update(Task).where(Task.id == last.id).values(
            submitted_at=None, client_id=None, label=None, reason=None, leased_at=utcnow(), expires_at=expires))
        state = _settle(c, ws, last.item_id, overlap)
        audit.record(c, "review.undo", user_id=user.id, project_id=ws.project_id, item_id=last.item_id, label=last.label, state=state)
        return lease_of(c, last.id)


def _settle(c, ws: Workspace, item_id: int, overlap: int) -> str:
    """Set the item's state from all answers submitted so far (also after an undo)."""
    decision = c.execute(_DECISION, {"item": item_id}).first()
    if decision is None or decision.state == State.gold:
        return "gold"  # a hidden gold item: the answer measures the reviewer and settles nothing
    details = dict(decision.details or {})
    machine = details.setdefault("machine", {"label": decision.label})
    machine.setdefault("method", decision.method)  # what to go back to if every answer is undone
    answers = c.execute(_ANSWERS, {"project": ws.project_id, "item": item_id}).all()
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
    c.execute(_SETTLE, {"item": item_id, **values, "updated_at": utcnow(), "details": details})
    return values["state"].value




@retry_deadlock
def promote_to_gold(ws: Workspace, user: Member, item_id: int, label: str, split: Split) -> None:
    """An expert makes an item gold (calibration or honeypot) or a guideline example; it becomes its decision."""
    label = _canonical(ws, label)
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
            c.execute(insert(Decision).values(item_id=item_id, project_id=ws.project_id, details={}, **values))
        audit.record(c, "gold.add", user_id=user.id, project_id=ws.project_id, item_id=item_id, label=label, split=split.value,
                     before=list(before) if before else None)

