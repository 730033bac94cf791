"""The `recorded` annotator: votes replayed from a `task,worker,label` table (historical crowd data), or from
Label Studio tasks' `predictions` (each model version a worker).

Each worker becomes an annotator named `<name>/<worker>`; votes for items not in the project
are counted and left out."""

from __future__ import annotations

from sqlalchemy import select

from labeler.config import RecordedAnnotator
from labeler.data.readers import read_vote_table
from labeler.errors import LabelerError
from labeler.store import models
from labeler.store.engine import insert_new
from labeler.store.models import utcnow
from labeler.store.workspace import Workspace


def load_recorded(ws: Workspace, config: RecordedAnnotator) -> dict[str, int]:
    path = ws.project.resolve(config.file)
    with ws.session() as s:
        items = dict(s.execute(select(models.Item.external_id, models.Item.id).where(models.Item.project_id == ws.project_id)).all())
        workers = {
            a.name: a.id
            for a in s.scalars(select(models.Annotator).where(models.Annotator.project_id == ws.project_id, models.Annotator.kind == "recorded"))
        }
        votes, unknown_items = [], 0
        for line, task, worker, label in read_vote_table(path):
            try:
                label = ws.task.canonical(label)
            except ValueError as exc:
                where = "task" if path.suffix.lower() == ".json" else "line"
                raise LabelerError(f"{path}: {where} {line}: {exc}") from None
            if task not in items:
                unknown_items += 1
                continue
            name = f"{config.name}/{worker}"
            if name not in workers:
                annotator = models.Annotator(project_id=ws.project_id, name=name, kind="recorded", config={"file": str(path)})
                s.add(annotator)
                s.flush()
                workers[name] = annotator.id
            votes.append({"item_id": items[task], "annotator_id": workers[name], "version": "", "label": label,
                          "cost": 0.0, "created_at": utcnow()})
        for start in range(0, len(votes), 5000):
            insert_new(s, models.Vote, votes[start:start + 5000])
    return {"votes": len(votes), "workers": len({v["annotator_id"] for v in votes}), "unknown_items": unknown_items}
