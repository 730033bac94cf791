"""Prompt versions in the store: register the current guideline's compile, resolve by name."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from labeler.errors import LabelerError
from labeler.store import models
from labeler.store.workspace import Workspace
from prompts.template import TEMPLATE_ID, CompiledPrompt, PromptSpec, compile_spec


def gold_examples(ws: Workspace) -> list[dict]:
    """Gold items of split `examples`, in import order."""
    with ws.session() as s:
        rows = s.execute(
            select(models.Item.fields, models.GoldLabel.label)
            .join(models.GoldLabel, models.GoldLabel.item_id == models.Item.id)
            .where(models.Item.project_id == ws.project_id, models.GoldLabel.split == models.Split.examples)
            .order_by(models.Item.id)
        ).all()
    return [{"fields": fields, "label": label} for fields, label in rows]


def current_spec(ws: Workspace, template: str = TEMPLATE_ID) -> PromptSpec:
    settings = ws.config.prompt
    return compile_spec(
        ws.project.guidelines_text(),
        ws.config.labels,
        ws.config.fields,
        gold_examples(ws),
        selection=settings.selection,
        shots=settings.shots,
        template=template,
        task=ws.config.task,
    )


def register(ws: Workspace, spec: PromptSpec) -> CompiledPrompt:
    """The stored version for this spec, created (with the next vN name) if new."""
    digest = spec.content_hash()
    for _ in range(5):  # another process may take the same name at the same moment
        with ws.session() as s:
            row = s.scalars(
                select(models.PromptVersion).where(
                    models.PromptVersion.project_id == ws.project_id, models.PromptVersion.content_hash == digest
                )
            ).first()
            if row:
                return CompiledPrompt(PromptSpec.from_dict(row.spec), row.name)
            count = s.execute(
                select(func.count()).select_from(models.PromptVersion).where(models.PromptVersion.project_id == ws.project_id)
            ).scalar_one()
            name = f"v{count + 1}"
            try:
                s.add(models.PromptVersion(project_id=ws.project_id, name=name, content_hash=digest, spec=spec.__dict__))
                s.flush()
            except IntegrityError:
                s.rollback()
                continue
        return CompiledPrompt(spec, name)
    raise LabelerError("could not register the prompt version: too many concurrent writers")


def resolve(ws: Workspace, name: str | None = None, template: str = TEMPLATE_ID) -> CompiledPrompt:
    """A version by name; None: the current guideline's version in this template (registered if new)."""
    if name is None:
        return register(ws, current_spec(ws, template))
    row = _by_name(ws, name)
    if row is not None:
        return CompiledPrompt(PromptSpec.from_dict(row.spec), row.name)
    # The guideline may have changed since the last command: its version is the newest name.
    current = register(ws, current_spec(ws, template))
    if current.name != name:
        raise LabelerError(f"no prompt version {name!r}; `labeler prompt list` shows them")
    return current


def _by_name(ws: Workspace, name: str):
    with ws.session() as s:
        return s.scalars(
            select(models.PromptVersion).where(
                models.PromptVersion.project_id == ws.project_id, models.PromptVersion.name == name
            )
        ).first()


def list_versions(ws: Workspace) -> list[dict]:
    with ws.session() as s:
        rows = s.scalars(
            select(models.PromptVersion).where(models.PromptVersion.project_id == ws.project_id).order_by(models.PromptVersion.id)
        ).all()
    return [
        {"name": r.name, "hash": r.content_hash, "template": r.spec.get("template"), "created_at": r.created_at.isoformat(),
         "examples": len(r.spec.get("examples", []))}
        for r in rows
    ]
