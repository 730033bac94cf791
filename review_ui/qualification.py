"""Qualification: a reviewer proves themselves on gold before real items, and again after a bad spell.

With `routing.review_qualification.items` > 0, a reviewer (not an expert) gets no real item
until an attempt is passed: `items` gold items, shown blind, of which `pass_mark` must be
answered right. A failed attempt shows its mistakes with the guideline's section for the
right label, and the next attempt opens after `cooldown_hours`. A qualified reviewer whose
accuracy on hidden gold over the last `window` answers falls below the mark is paused: their
leases go back to the queue and a new attempt starts. Managers see every attempt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, insert, select, true, update

from labeler.store import audit, models
from labeler.store.models import Split, utcnow
from labeler.store.users import Member
from labeler.store.workspace import Workspace

Task, Gold, Attempt, Item = models.ReviewTask, models.GoldLabel, models.Qualification, models.Item


@dataclass(frozen=True)
class Gate:
    attempt: int | None = None  # an attempt under way: its items come first
    until: datetime | None = None  # failed: no items before then
    message: str | None = None


def _rules(ws: Workspace):
    return ws.config.routing.review_qualification


def gate(c, ws: Workspace, user: Member) -> Gate | None:
    """None: the reviewer may have real items. Else the attempt to serve, or the wait."""
    rules = _rules(ws)
    if not rules.items:
        return None
    last = c.execute(select(Attempt.id, Attempt.finished_at, Attempt.passed, Attempt.right, Attempt.items)
                     .where(Attempt.user_id == user.id, Attempt.project_id == ws.project_id)
                     .order_by(Attempt.id.desc()).limit(1)).first()
    if last is not None and last.finished_at is None:
        return Gate(attempt=last.id)
    if last is not None and last.passed:
        return None
    if last is not None:  # failed: a cool-down, then a new attempt
        until = _aware(last.finished_at) + timedelta(hours=rules.cooldown_hours)
        if utcnow() < until:
            return Gate(until=until, message=f"qualification not passed ({last.right} of {last.items} right, "
                                             f"{rules.pass_mark:.0%} needed); the next attempt opens at "
                                             f"{until:%Y-%m-%d %H:%M} UTC")
    return Gate(attempt=start(c, ws, user, "a retry" if last is not None else "a new reviewer"))


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=utcnow().tzinfo)


def start(c, ws: Workspace, user: Member, reason: str) -> int:
    attempt = c.execute(insert(Attempt).values(user_id=user.id, project_id=ws.project_id, started_at=utcnow(),
                                               items=_rules(ws).items, reason=reason).returning(Attempt.id)).scalar_one()
    audit.record(c, "qualification.start", user_id=user.id, project_id=ws.project_id, attempt=attempt, reason=reason)
    return attempt


def next_item(c, ws: Workspace, user: Member, attempt: int) -> int | None:
    """A gold item (not a few-shot example) not yet in this attempt, those never shown to the user first."""
    in_attempt = select(Task.id).where(Task.item_id == Gold.item_id, Task.qualification_id == attempt).exists()
    seen = select(Task.id).where(Task.item_id == Gold.item_id, Task.user_id == user.id).exists()
    return c.execute(
        select(Gold.item_id).join(Item, Item.id == Gold.item_id)
        .where(Item.project_id == ws.project_id, Gold.split != Split.examples, ~in_attempt)
        .order_by(seen, func.random()).limit(1)).scalar()


def answered(c, ws: Workspace, user: Member, attempt: int) -> None:
    """After an answer in an attempt: finish it once it has all its answers."""
    rows = c.execute(select(Task.label, Gold.label).join(Gold, Gold.item_id == Task.item_id)
                     .where(Task.qualification_id == attempt, Task.submitted_at.is_not(None))).all()
    needed = c.execute(select(Attempt.items).where(Attempt.id == attempt)).scalar_one()
    if len(rows) < needed:
        return
    right = sum(mine == gold for mine, gold in rows)
    passed = right >= _rules(ws).pass_mark * needed
    c.execute(update(Attempt).where(Attempt.id == attempt).values(finished_at=utcnow(), right=right, passed=passed))
    audit.record(c, "qualification.finish", user_id=user.id, project_id=ws.project_id, attempt=attempt, right=right, items=needed, passed=passed)


def check_pause(c, ws: Workspace, user: Member) -> bool:
    """After a hidden gold answer: pause a reviewer whose accuracy over the window fell below the mark."""
    rules = _rules(ws)
    if not rules.items:
        return False
    since = c.execute(select(func.max(Attempt.finished_at)).where(
        Attempt.user_id == user.id, Attempt.project_id == ws.project_id, Attempt.passed.is_(True))).scalar()
    rows = c.execute(
        select(Task.label, Gold.label).join(Gold, Gold.item_id == Task.item_id).join(Item, Item.id == Task.item_id)
        .where(Task.user_id == user.id, Item.project_id == ws.project_id, Task.submitted_at.is_not(None),
               Task.qualification_id.is_(None), Task.submitted_at > since if since else true())
        .order_by(Task.submitted_at.desc()).limit(rules.window)).all()
    if len(rows) < rules.window:
        return False
    accuracy = sum(mine == gold for mine, gold in rows) / len(rows)
    if accuracy >= rules.pass_mark:
        return False
    start(c, ws, user, f"paused: {accuracy:.0%} right on the last {len(rows)} hidden gold items")
    return True


def attempts(ws: Workspace, user_id: int | None = None) -> list[dict]:
    """Qualification history, newest first (one reviewer's, or everyone's)."""
    query = (select(Attempt, models.User.name).join(models.User, models.User.id == Attempt.user_id)
             .where(Attempt.project_id == ws.project_id))
    if user_id is not None:
        query = query.where(Attempt.user_id == user_id)
    with ws.session() as s:
        rows = s.execute(query.order_by(Attempt.id.desc())).all()
    return [{"attempt": a.id, "reviewer": name, "reason": a.reason, "started_at": a.started_at.isoformat(),
             "finished_at": a.finished_at.isoformat() if a.finished_at else None, "items": a.items,
             "right": a.right, "passed": a.passed} for a, name in rows]


def mistakes(ws: Workspace, attempt: int) -> list[dict]:
    """A finished attempt's wrong answers: the item, what was answered, the gold label and its guideline section."""
    with ws.session() as s:
        rows = s.execute(
            select(Item.external_id, Item.fields, Task.label, Task.reason, Gold.label)
            .join(Task, Task.item_id == Item.id).join(Gold, Gold.item_id == Item.id)
            .where(Task.qualification_id == attempt, Task.submitted_at.is_not(None))
            .order_by(Task.submitted_at)).all()
    text = ws.project.guidelines_text()
    return [{"item": ext, "fields": fields, "answered": label, "reason": reason, "gold": gold,
             "guideline": section(text, gold)} for ext, fields, label, reason, gold in rows if label != gold]


def section(guideline: str, label: str) -> str:
    """The guideline's section for a label (its heading to the next heading of the same or a higher level)."""
    lines = guideline.splitlines()
    for n, line in enumerate(lines):
        heading = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if heading and heading.group(2).strip().strip("`").lower() == label.lower():
            level, body = len(heading.group(1)), []
            for rest in lines[n + 1:]:
                other = re.match(r"^(#{1,6})\s", rest)
                if other and len(other.group(1)) <= level:
                    break
                body.append(rest)
            return "\n".join(body).strip()
    return ""
