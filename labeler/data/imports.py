"""Import items and gold labels from CSV or JSONL: streaming, idempotent, all-or-nothing.

A file is read in chunks inside one transaction, so memory stays flat however large it is,
and a bad row rolls the whole import back unless `skip_bad` is set. Items are immutable:
re-importing the same row changes nothing; the same id with other fields is a conflict.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

from labeler.data.readers import Progress, read_rows
from labeler.store import models
from labeler.store.engine import upsert
from labeler.store.models import Split, State, utcnow
from labeler.store.workspace import Workspace

ID_COLUMNS = ("id", "task")
# Columns an export writes beside the item's fields; never stored as fields on re-import.
EXPORT_COLUMNS = {"label", "confidence", "state", "method", "decided_by", "votes", "gold", "split"}
CHUNK_ROWS = 2000
MAX_REPORTED_ERRORS = 50


@dataclass
class RowError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class ImportReport:
    file: str
    rows: int = 0
    items_added: int = 0
    items_unchanged: int = 0
    gold_added: int = 0
    gold_unchanged: int = 0
    bad_rows: int = 0
    errors: list[RowError] = field(default_factory=list)
    committed: bool = False

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "errors"}
        data["errors"] = [{"line": e.line, "message": e.message} for e in self.errors]
        return data


def content_hash(fields: dict[str, Any]) -> str:
    blob = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# --- importing -------------------------------------------------------------------------


@dataclass
class _Row:
    line: int
    external_id: str
    fields: dict[str, Any] | None  # None: a gold row naming an item imported before
    label: str | None = None
    split: Split | None = None


def import_items(ws: Workspace, path: Path, *, skip_bad: bool = False, progress: Progress | None = None) -> ImportReport:
    return _import(ws, Path(path), gold=False, default_split=None, skip_bad=skip_bad, progress=progress)


def import_gold(
    ws: Workspace,
    path: Path,
    *,
    split: Split | str | None = None,
    skip_bad: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """Gold rows carry `label` and optionally `split` (else `split`, default calibration).

    A gold row may carry the item's fields too, which imports the item; otherwise the item
    must be imported already."""
    default = Split(split) if split else Split.calibration
    return _import(ws, Path(path), gold=True, default_split=default, skip_bad=skip_bad, progress=progress)


def _import(ws, path, *, gold, default_split, skip_bad, progress) -> ImportReport:
    report = ImportReport(file=str(path))
    labels = set(ws.config.label_names)
    declared = ws.config.fields
    with ws.session() as session:
        chunk: list[_Row] = []
        for line, raw in read_rows(path, progress):
            report.rows += 1
            row = _parse_row(line, raw, gold=gold, labels=labels, declared=declared, default_split=default_split)
            if isinstance(row, RowError):
                _bad(report, row)
            else:
                chunk.append(row)
            if len(chunk) >= CHUNK_ROWS:
                _write_chunk(session, ws.project_id, chunk, report)
                chunk = []
        _write_chunk(session, ws.project_id, chunk, report)
        if report.bad_rows and not skip_bad:
            session.rollback()
            return report
        session.add(
            models.Run(
                project_id=ws.project_id,
                kind="import gold" if gold else "import items",
                finished_at=utcnow(),
                stats=report.as_dict() | {"errors": len(report.errors)},
            )
        )
        report.committed = True
    return report


def _bad(report: ImportReport, error: RowError) -> None:
    report.bad_rows += 1
    if len(report.errors) < MAX_REPORTED_ERRORS:
        report.errors.append(error)


def _parse_row(line, raw, *, gold, labels, declared, default_split) -> _Row | RowError:
    if "__error__" in raw:
        return RowError(line, raw["__error__"])
    raw = dict(raw)
    external_id = None
    for column in ID_COLUMNS:
        if column in raw:
            value = raw.pop(column)
            if isinstance(value, bool) or not isinstance(value, (str, int, float, type(None))):
                return RowError(line, f"the item id must be a string or a number, not {type(value).__name__}")
            external_id = external_id or (str(value).strip() if value is not None else "")
    if not external_id:
        return RowError(line, "missing item id (an `id` or `task` column)")
    label = split = None
    if gold:
        label = raw.get("label")
        label = str(label).strip() if label is not None else ""
        if not label:
            return RowError(line, f"item {external_id!r}: missing `label`")
        if label not in labels:
            return RowError(line, f"item {external_id!r}: unknown label {label!r} (labels: {', '.join(sorted(labels))})")
        split_value = raw.get("split") or default_split
        try:
            split = split_value if isinstance(split_value, Split) else Split(str(split_value).strip())
        except ValueError:
            return RowError(line, f"item {external_id!r}: unknown split {split_value!r} (use {', '.join(s.value for s in Split)})")
    fields = {k: v for k, v in raw.items() if k not in EXPORT_COLUMNS and k is not None}
    if not fields and gold:
        return _Row(line, external_id, None, label, split)
    missing = [f for f in declared if f not in fields or fields[f] is None]
    if missing:
        return RowError(line, f"item {external_id!r}: missing field(s) {', '.join(missing)}")
    return _Row(line, external_id, fields, label, split)


def _write_chunk(session, project_id: int, chunk: list[_Row], report: ImportReport) -> None:
    if not chunk:
        return
    Item = models.Item
    ids = list({r.external_id for r in chunk})
    stored = {
        ext: (item_id, digest)
        for ext, item_id, digest in session.execute(
            select(Item.external_id, Item.id, Item.content_hash).where(
                Item.project_id == project_id, Item.external_id.in_(ids)
            )
        )
    }
    new_items: dict[str, dict] = {}
    accepted: list[_Row] = []
    for row in chunk:
        if row.fields is None:
            if row.external_id not in stored and row.external_id not in new_items:
                _bad(report, RowError(row.line, f"item {row.external_id!r} is not imported; import items first or give its fields"))
                continue
            accepted.append(row)
            continue
        digest = content_hash(row.fields)
        known = stored.get(row.external_id) or (
            (None, new_items[row.external_id]["content_hash"]) if row.external_id in new_items else None
        )
        if known is None:
            new_items[row.external_id] = {
                "project_id": project_id,
                "external_id": row.external_id,
                "fields": row.fields,
                "content_hash": digest,
                "created_at": utcnow(),
            }
        elif known[1] != digest:
            _bad(report, RowError(row.line, f"item {row.external_id!r} was imported before with other fields"))
            continue
        else:
            report.items_unchanged += 1
        accepted.append(row)
    if new_items:
        result = session.execute(insert(Item).returning(Item.external_id, Item.id), list(new_items.values()))
        stored.update({ext: (item_id, None) for ext, item_id in result})
        report.items_added += len(new_items)
    gold_rows = [r for r in accepted if r.label is not None]
    if gold_rows:
        _write_gold(session, gold_rows, stored, report)


def _write_gold(session, rows: list[_Row], stored: dict, report: ImportReport) -> None:
    Gold = models.GoldLabel
    item_ids = [stored[r.external_id][0] for r in rows]
    existing = {
        item_id: (label, split)
        for item_id, label, split in session.execute(
            select(Gold.item_id, Gold.label, Gold.split).where(Gold.item_id.in_(item_ids))
        )
    }
    fresh: dict[int, _Row] = {}
    for row, item_id in zip(rows, item_ids):
        current = existing.get(item_id) or (
            (fresh[item_id].label, fresh[item_id].split) if item_id in fresh else None
        )
        if current is None:
            fresh[item_id] = row
        elif current != (row.label, row.split):
            _bad(report, RowError(row.line, f"item {row.external_id!r} already has gold {current[0]!r} ({current[1].value})"))
        else:
            report.gold_unchanged += 1
    if not fresh:
        return
    now = utcnow()
    session.execute(
        insert(Gold),
        [{"item_id": i, "label": r.label, "split": r.split, "created_at": now} for i, r in fresh.items()],
    )
    # A gold label is the item's decision, replacing an earlier machine decision.
    upsert(
        session,
        models.Decision,
        [
            {"item_id": i, "label": r.label, "confidence": 1.0, "state": State.gold, "method": "gold",
             "details": {}, "updated_at": now}
            for i, r in fresh.items()
        ],
        keys=["item_id"],
    )
    report.gold_added += len(fresh)
