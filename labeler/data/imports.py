"""Import items and gold labels from CSV or JSONL: streaming, idempotent, checked before written.

A file is read in chunks, so memory stays flat however large it is, and a bad row means nothing
is imported unless `skip_bad` is set. On PostgreSQL the import is one transaction. SQLite has a
single write lock, so there a first pass checks every row and writes nothing, and a second
writes a transaction per chunk: reviewers and runs get in between chunks, and a store failure
midway leaves whole chunks (importing the file again finishes it). Items are immutable:
re-importing the same row changes nothing; the same id with other fields is a conflict.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Column, MetaData, String, Table, delete, insert, select
from sqlalchemy.exc import DBAPIError

from labeler.data.readers import Progress, csv_header, read_rows
from labeler.errors import LabelerError
from labeler.store import models
from labeler.store.engine import upsert
from labeler.store.models import Split, State, utcnow
from labeler.store.workspace import Workspace

ID_COLUMNS = ("id", "task")
# Columns an export writes beside the item's fields; never stored as fields on re-import.
EXPORT_COLUMNS = {"label", "labels", "spans", "label_confidence", "confidence", "state", "method", "decided_by", "votes", "gold", "split", "certified"}
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

    @property
    def unit(self) -> str:
        """What an error's number counts: lines of CSV and JSONL, tasks of Label Studio JSON, Parquet rows."""
        return {".json": "task", ".parquet": "row"}.get(Path(self.file).suffix.lower(), "line")

    def where(self, error: RowError) -> str:
        return f"{self.file}: {self.unit} {error.line}: {error.message}"

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "errors"}
        data["errors"] = [{"line": e.line, "message": e.message} for e in self.errors]
        return data | {"unit": self.unit}


def _blob(fields: dict[str, Any]) -> str:
    return json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def content_hash(fields: dict[str, Any]) -> str:
    return hashlib.sha256(_blob(fields).encode("utf-8")).hexdigest()


# --- importing -------------------------------------------------------------------------


@dataclass
class _Row:
    line: int
    external_id: str
    fields: dict[str, Any] | None  # None: a gold row naming an item imported before
    label: str | None = None
    split: Split | None = None
    digest: str | None = None  # of the fields


def import_items(ws: Workspace, path: Path, *, skip_bad: bool = False, progress: Progress | None = None) -> ImportReport:
    return _import(ws, Path(path), gold=False, default_split=None, skip_bad=skip_bad, progress=progress)


def import_gold(
    ws: Workspace,
    path: Path,
    *,
    split: Split | str | None = None,
    honeypot_share: float = 0.0,
    skip_bad: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """Gold rows carry `label` and optionally `split` (else `split`, default calibration; with
    `honeypot_share`, that share of the rows without a split, picked by a hash of their id, are honeypots).

    A gold row may carry the item's fields too, which imports the item; otherwise the item
    must be imported already."""
    base = Split(split) if split else Split.calibration

    def default(external_id: str) -> Split:
        drawn = int(hashlib.sha256(external_id.encode()).hexdigest()[:8], 16) / 2**32  # the same on every import
        return Split.honeypot if drawn < honeypot_share else base

    return _import(ws, Path(path), gold=True, default_split=default, skip_bad=skip_bad, progress=progress)


def _check_header(ws, path: Path, gold: bool) -> None:
    """A CSV header without a declared field fails every row the same way: said once, for the header."""
    header = csv_header(path)
    if header is None or (len(header) == 1 and any(sep in header[0] for sep in ";\t")):
        return  # the reader says what is wrong with a header of one column
    fields = [h for h in header if h not in ID_COLUMNS and h not in EXPORT_COLUMNS]
    missing = [f for f in ws.config.fields if f not in header]
    if missing and (fields or not gold):  # a gold file of ids and labels only names items imported before
        raise LabelerError(f"{path}: line 1: no column {', '.join(map(repr, missing))} (the fields labeler.yaml "
                           f"declares); the header has {', '.join(map(repr, header))}: rename the column, or "
                           "change `fields` in labeler.yaml")


def _import(ws, path, *, gold, default_split, skip_bad, progress) -> ImportReport:
    _check_header(ws, path, gold)
    parse = functools.partial(_parse_row, gold=gold, task=ws.task, declared=ws.config.fields,
                              default_split=default_split, max_chars=ws.config.max_item_chars)
    kind = "import gold" if gold else "import items"
    if ws.engine.dialect.name != "sqlite":  # PostgreSQL locks rows, not the store: one transaction
        return _write(ws, path, parse, progress, kind=kind, skip_bad=skip_bad, per_chunk=False)
    # SQLite has one write lock for the whole store: check every row first, writing nothing, then
    # write a transaction per chunk, so reviewers and runs get in between.
    size = Path(path).stat().st_size if Path(path).is_file() else 0
    checked = _nothing_read(_check(ws, path, parse, progress and (lambda done: progress(done // 2))))
    if checked.bad_rows and not skip_bad:
        return checked
    return _write(ws, path, parse, progress and (lambda done: progress((size + done) // 2)), kind=kind,
                  skip_bad=True, per_chunk=True)


def _nothing_read(report: ImportReport) -> ImportReport:
    if report.rows == 0:  # the same for an empty CSV, a header alone and an empty JSONL file
        raise LabelerError(f"{report.file}: no rows to import (the file is empty, or holds a header only)")
    return report


def _write(ws, path, parse, progress, *, kind, skip_bad, per_chunk) -> ImportReport:
    report = ImportReport(file=str(path))
    with ws.session() as whole:
        for chunk in _chunks(path, parse, report, progress):
            written = report.items_added, report.gold_added
            try:
                with ws.session() if per_chunk else contextlib.nullcontext(whole) as session:
                    _write_chunk(session, ws.project_id, chunk, report)
            except DBAPIError as exc:
                if not per_chunk:
                    raise
                raise LabelerError(f"{path}: the store refused after {written[0]} items and {written[1]} gold "
                                   f"labels were written ({exc.orig}); importing the file again finishes it") from exc
        _nothing_read(report)
        if report.bad_rows and not skip_bad:
            whole.rollback()
            return report
        whole.add(models.Run(project_id=ws.project_id, kind=kind, finished_at=utcnow(),
                             stats=report.as_dict() | {"errors": len(report.errors)}))
    report.committed = True
    return report


def _chunks(path, parse, report, progress) -> Iterator[list[_Row]]:
    """The file's good rows in chunks; bad ones go to the report."""
    chunk: list[_Row] = []
    for line, raw in read_rows(path, progress):
        report.rows += 1
        row = parse(line, raw)
        if isinstance(row, RowError):
            _bad(report, row)
            continue
        chunk.append(row)
        if len(chunk) >= CHUNK_ROWS:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# What the rows before in the file added, while checking: nothing is written to the store then.
_seen_table = Table("import_seen", MetaData(), Column("external_id", String, primary_key=True),
                    Column("digest", String), Column("label", String), Column("split", String),
                    prefixes=["TEMPORARY"])


def _check(ws, path, parse, progress) -> ImportReport:
    """Every row checked against the store and the rows before it, before anything is written.

    Reads, plus a temporary table of the ids seen so far (SQLite keeps it apart from the store
    file), so the check takes no write lock and memory stays flat."""
    report = ImportReport(file=str(path))
    seen = _seen_table
    with ws.engine.connect() as conn:
        seen.drop(conn, checkfirst=True)
        seen.create(conn)
        try:
            for chunk in _chunks(path, parse, report, progress):
                ids = list({r.external_id for r in chunk})
                known = _stored(conn, ws.project_id, chunk)
                for ext, digest, label, split in conn.execute(select(seen).where(seen.c.external_id.in_(ids))):
                    known.digests.setdefault(ext, digest)
                    if label is not None:
                        known.gold.setdefault(ext, (label, Split(split)))
                new_items, new_gold = _sort_out(chunk, known, report)
                fresh = list(new_items.keys() | new_gold.keys())
                if fresh:  # a gold-only row's item is known: from the store, the seen table or this chunk
                    conn.execute(delete(seen).where(seen.c.external_id.in_(fresh)))
                    conn.execute(insert(seen), [
                        {"external_id": ext,
                         "digest": new_items[ext].digest if ext in new_items else known.digests[ext],
                         "label": new_gold[ext].label if ext in new_gold else None,
                         "split": new_gold[ext].split.value if ext in new_gold else None} for ext in fresh])
        finally:
            conn.rollback()
            seen.drop(conn, checkfirst=True)
            conn.commit()
    return report


def _bad(report: ImportReport, error: RowError) -> None:
    report.bad_rows += 1
    if len(report.errors) < MAX_REPORTED_ERRORS:
        report.errors.append(error)


def _parse_row(line, raw, *, gold, task, declared, default_split, max_chars=None) -> _Row | RowError:
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
    if gold and "__no_gold__" in raw:
        return RowError(line, f"item {external_id!r}: no gold in this row ({raw['__no_gold__']})")
    raw.pop("__no_gold__", None)
    if gold:
        # the task's own column first (a label set's `labels`, `spans`); a Label Studio choice comes as `labels`
        column = next((c for c in (task.key, "labels", "label") if c in raw), "label")
        try:
            text = raw.get(declared[0])  # spans are checked against the item's text, when the row has it
            label = task.canonical(raw.get(column), text if isinstance(text, str) else None)
        except ValueError as exc:
            return RowError(line, f"item {external_id!r}: {exc} (`{column}`)")
        split_value = raw.get("split") or default_split(external_id)
        try:
            split = split_value if isinstance(split_value, Split) else Split(str(split_value).strip())
        except ValueError:
            return RowError(line, f"item {external_id!r}: unknown split {split_value!r} (use {', '.join(s.value for s in Split)})")
    fields = {k: v for k, v in raw.items() if k not in EXPORT_COLUMNS and k is not None}
    for name in declared:  # a field named by its path in nested data (`data.text`) is kept under that name
        if name not in fields and "." in name:
            value = at_path(fields, name)
            if value is not None:
                fields[name] = value
    if not fields and gold:
        return _Row(line, external_id, None, label, split)
    missing = [f for f in declared if f not in fields or fields[f] is None]
    if missing:
        return RowError(line, f"item {external_id!r}: missing field(s) {', '.join(missing)}{_nested_hint(fields, missing)}")
    blob = _blob(fields)
    if max_chars is not None and len(blob) > max_chars:
        return RowError(line, f"item {external_id!r}: its fields hold {len(blob):,} characters, over the project's "
                              f"limit of {max_chars:,} (`max_item_chars` in labeler.yaml)")
    return _Row(line, external_id, fields, label, split, hashlib.sha256(blob.encode("utf-8")).hexdigest())


def _nested_hint(fields: dict, missing: list[str]) -> str:
    """Where a missing field is one level down (Label Studio's `data`, Argilla's `fields`): the path to declare."""
    found = [f"{key}.{name}" for name in missing for key, value in fields.items()
             if isinstance(value, dict) and name in value]
    return f" (found nested: declare `fields: [{', '.join(found)}]` in labeler.yaml)" if found else ""


def at_path(data: dict, path: str):
    """The value at a dotted path (`data.text`) in nested objects; None where there is none."""
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


@dataclass
class _Known:
    """What is held for a chunk's ids: each item's content hash, and its gold label and split."""

    digests: dict[str, str]
    gold: dict[str, tuple[str, Split]]
    ids: dict[str, int] = field(default_factory=dict)  # external id -> item id, in the store


def _stored(conn, project_id: int, chunk: list[_Row]) -> _Known:
    Item, Gold = models.Item, models.GoldLabel
    ids = list({r.external_id for r in chunk})
    known = _Known({}, {})
    for ext, item_id, digest in conn.execute(select(Item.external_id, Item.id, Item.content_hash)
                                              .where(Item.project_id == project_id, Item.external_id.in_(ids))):
        known.digests[ext], known.ids[ext] = digest, item_id
    if not known.ids or all(r.label is None for r in chunk):
        return known
    for ext, label, split in conn.execute(select(Item.external_id, Gold.label, Gold.split)
                                          .join(Gold, Gold.item_id == Item.id)
                                          .where(Item.project_id == project_id, Item.external_id.in_(ids))):
        known.gold[ext] = (label, Split(split))
    return known


def _sort_out(chunk: list[_Row], known: _Known, report: ImportReport) -> tuple[dict[str, _Row], dict[str, _Row]]:
    """A chunk's new items and new gold labels; rows that conflict with what is known go to the
    report as bad, rows that repeat it count as unchanged."""
    new_items: dict[str, _Row] = {}
    new_gold: dict[str, _Row] = {}
    for row in chunk:
        ext = row.external_id
        before = known.digests[ext] if ext in known.digests else (new_items[ext].digest if ext in new_items else False)
        if row.fields is None:
            if before is False:
                _bad(report, RowError(row.line, f"item {ext!r} is not imported; import items first or give its fields"))
                continue
        elif before is False:
            new_items[ext] = row
        elif before != row.digest:
            _bad(report, RowError(row.line, f"item {ext!r} was imported before with other fields"))
            continue
        else:
            report.items_unchanged += 1
        if row.label is None:
            continue
        current = known.gold.get(ext) or ((new_gold[ext].label, new_gold[ext].split) if ext in new_gold else None)
        if current is None:
            new_gold[ext] = row
        elif current != (row.label, row.split):
            _bad(report, RowError(row.line, f"item {ext!r} already has gold {current[0]!r} ({current[1].value})"))
        else:
            report.gold_unchanged += 1
    return new_items, new_gold


def _write_chunk(session, project_id: int, chunk: list[_Row], report: ImportReport) -> None:
    known = _stored(session, project_id, chunk)
    new_items, new_gold = _sort_out(chunk, known, report)
    if new_items:
        Item, now = models.Item, utcnow()
        result = session.execute(
            insert(Item).returning(Item.external_id, Item.id),
            [{"project_id": project_id, "external_id": ext, "fields": r.fields, "content_hash": r.digest,
              "created_at": now} for ext, r in new_items.items()])
        known.ids.update(dict(result.all()))
        report.items_added += len(new_items)
    if not new_gold:
        return
    now = utcnow()
    fresh = {known.ids[ext]: r for ext, r in new_gold.items()}
    session.execute(
        insert(models.GoldLabel),
        [{"item_id": i, "label": r.label, "split": r.split, "created_at": now} for i, r in fresh.items()],
    )
    # A gold label is the item's decision, replacing an earlier machine decision.
    upsert(
        session,
        models.Decision,
        [
            {"item_id": i, "project_id": project_id, "label": r.label, "confidence": 1.0, "state": State.gold,
             "method": "gold", "details": {}, "updated_at": now}
            for i, r in fresh.items()
        ],
        keys=["item_id"],
    )
    report.gold_added += len(fresh)
