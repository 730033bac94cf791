"""The audit log: who changed which label, user or gold item, and when."""

from __future__ import annotations

from sqlalchemy import insert, select

from labeler.store import models
from labeler.store.workspace import Workspace


def record(connection, action: str, *, user_id: int | None, project_id: int, item_id: int | None = None,
           **details) -> None:
    """Append one event of a project inside the caller's transaction, so the change and its record commit
    together."""
    connection.execute(_INSERT, {"action": action, "user_id": user_id, "project_id": project_id, "item_id": item_id,
                                 "details": details, "at": models.utcnow()})


_INSERT = insert(models.AuditEvent)  # built once: every review answer writes one


def events(ws: Workspace, *, item_id: int | None = None, limit: int = 100) -> list[dict]:
    """Newest first: this project's audit events (of its items, users and qualifications). Events written
    before they carried their project are shown where their item is this project's."""
    Event, User, Item = models.AuditEvent, models.User, models.Item
    query = (select(Event, User.name, Item.external_id).outerjoin(User, User.id == Event.user_id)
             .outerjoin(Item, Item.id == Event.item_id)
             .where((Event.project_id == ws.project_id) | (Event.project_id.is_(None) & (Item.project_id == ws.project_id))))
    if item_id is not None:
        query = query.where(Event.item_id == item_id)
    with ws.session() as s:
        rows = s.execute(query.order_by(Event.id.desc()).limit(limit)).all()
    return [{"at": e.at.isoformat(), "user": name, "action": e.action, "item": external_id, **e.details}
            for e, name, external_id in rows]
