"""A labeling run over a project: recorded votes loaded, annotators asked, decisions made."""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from sqlalchemy import select

from labeler import models
from labeler.models import utcnow
from labeler.recorded import load_recorded
from labeler.config import RecordedAnnotator
from labeler.runner import run_askers
from labeler.workspace import Workspace
from routing.decide import decide_by_majority


def items_to_label(ws: Workspace, limit: int | None = None) -> list[int]:
    """Every item but the few-shot examples (those are in the prompt), in import order."""
    Item, Gold = models.Item, models.GoldLabel
    with ws.session() as s:
        query = (
            select(Item.id)
            .outerjoin(Gold, Gold.item_id == Item.id)
            .where(Item.project_id == ws.project_id, (Gold.split.is_(None)) | (Gold.split != models.Split.examples))
            .order_by(Item.id)
        )
        if limit is not None:
            query = query.limit(limit)
        return list(s.scalars(query))


def run_project(ws: Workspace, askers: list, *, limit: int | None = None,
                on_answer: Callable | None = None, on_start: Callable | None = None) -> dict:
    started = time.perf_counter()
    recorded = {c.name: load_recorded(ws, c) for c in ws.config.annotators if isinstance(c, RecordedAnnotator)}
    item_ids = items_to_label(ws, limit)
    with ws.session() as s:
        run = models.Run(project_id=ws.project_id, kind="run")
        s.add(run)
        s.flush()
        run_id = run.id
    if on_start:
        on_start(len(item_ids) * len(askers))
    reports = asyncio.run(run_askers(ws, askers, item_ids, run_id=run_id, on_answer=on_answer)) if askers else []
    decisions = decide_by_majority(ws)
    result = {
        "run_id": run_id,
        "items": len(item_ids),
        "annotators": [r.as_dict() for r in reports],
        "recorded": recorded,
        "decisions": decisions,
        "seconds": round(time.perf_counter() - started, 2),
    }
    with ws.session() as s:
        row = s.get(models.Run, run_id)
        row.finished_at, row.stats = utcnow(), result
    return result
