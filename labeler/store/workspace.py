"""A project file opened against its store: the handle every command works through."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import or_
from sqlalchemy.engine import Engine
from sqlmodel import select

from labeler.config import Project, load_project
from labeler.errors import LabelerError
from labeler.store import models
from labeler.store.engine import database_url, open_store, open_store_for_reading, session_scope
from labeler.tasks import SEPARATOR, task_type


@dataclass
class Workspace:
    project: Project
    engine: Engine
    project_id: int

    @property
    def config(self):
        return self.project.config

    @property
    def task(self):
        """The project's task type (labeler.tasks): how an answer is checked and stored."""
        return task_type(self.project.config)

    def session(self):
        return session_scope(self.engine)

    def annotator_ids(self) -> dict[str, int]:
        with self.session() as s:
            rows = s.exec(select(models.Annotator).where(models.Annotator.project_id == self.project_id))
            return {a.name: a.id for a in rows}


def open_workspace(project_dir: Path | None = None, url: str | None = None, *, read_only: bool = False) -> Workspace:
    """Load the project file, open (and migrate) its store, and sync the file into it. `read_only`: for
    commands that only read, which then work on a store that cannot be written (a full disk)."""
    project = load_project(project_dir)
    if not read_only:
        engine = open_store(url or database_url(project.root))
        return Workspace(project=project, engine=engine, project_id=sync_project(engine, project))
    engine = open_store_for_reading(url or database_url(project.root))
    with session_scope(engine) as s:
        project_id = s.exec(select(models.Project.id).where(models.Project.name == project.config.name)).first()
    if project_id is None:
        raise LabelerError(f"the store has no project {project.config.name!r} yet: nothing to read")
    return Workspace(project=project, engine=engine, project_id=project_id)


def sync_project(engine: Engine, project: Project) -> int:
    """Upsert the project row and its configured annotators; return the project id."""
    config = project.config
    with session_scope(engine) as s:
        row = s.exec(select(models.Project).where(models.Project.name == config.name)).first()
        if row is None:
            row = models.Project(name=config.name, labels=config.label_names, config={})
            s.add(row)
        elif (row.config or {}).get("task", "single_label") != config.task and _has_labels(s, row.id, None):
            raise LabelerError(f"{config.name!r} was a {(row.config or {}).get('task', 'single_label')} project with "
                               f"votes or gold: it cannot become {config.task}; make a new project")
        elif row.labels != config.label_names and _has_labels(s, row.id, set(row.labels) - set(config.label_names)):
            removed = sorted(set(row.labels) - set(config.label_names))
            raise LabelerError(
                f"labels {removed} were removed from {config.name!r} but votes or gold still use them"
            )
        row.labels = config.label_names
        row.config = config.model_dump(mode="json")
        s.flush()
        existing = {
            a.name: a
            for a in s.exec(select(models.Annotator).where(models.Annotator.project_id == row.id))
        }
        for annotator in config.annotators:
            settings = annotator.model_dump(mode="json")
            current = existing.get(annotator.name)
            if current is None:
                s.add(models.Annotator(project_id=row.id, name=annotator.name, kind=annotator.kind, config=settings))
            else:
                current.kind, current.config = annotator.kind, settings
        return row.id


def _has_labels(session, project_id: int, labels: set[str] | None) -> bool:
    """Whether gold or votes of the project use any of these labels (None: any label at all), alone or
    as a part of a label set (labeler.tasks)."""
    if labels is not None and not labels:
        return False

    def uses(column):
        if labels is None:
            return column.is_not(None)
        sep = SEPARATOR
        return or_(*[part for x in labels for part in (column == x, column.like(f"{x}{sep}%"),
                                                       column.like(f"%{sep}{x}"), column.like(f"%{sep}{x}{sep}%"))])

    gold = session.exec(
        select(models.GoldLabel.item_id)
        .join(models.Item, models.Item.id == models.GoldLabel.item_id)
        .where(models.Item.project_id == project_id, uses(models.GoldLabel.label))
    ).first()
    vote = session.exec(
        select(models.Vote.id)
        .join(models.Item, models.Item.id == models.Vote.item_id)
        .where(models.Item.project_id == project_id, uses(models.Vote.label))
    ).first()
    return gold is not None or vote is not None
