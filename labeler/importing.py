"""Import items and gold labels from CSV or JSONL: streaming, idempotent, all-or-nothing.

A file is read in chunks inside one transaction, so memory stays flat however large it is,
and a bad row rolls the whole import back unless `skip_bad` is set. Items are immutable:
re-importing the same row changes nothing; the same id with other fields is a conflict.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from sqlalchemy import insert, select

from labeler import models
from labeler.errors import LabelerError
from labeler.models import Split, State, utcnow
from labeler.store import upsert
from labeler.workspace import Workspace

ID_COLUMNS = ("id", "task")
# Columns an export writes beside the item's fields; never stored as fields on re-import.
EXPORT_COLUMNS = {"label", "confidence", "state", "method", "decided_by", "votes", "gold", "split"}
CHUNK_ROWS = 2000
MAX_REPORTED_ERRORS = 50
csv.field_size_limit(256 * 1024 * 1024)

Progress = Callable[[int], None]  # called with the bytes read so far


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


# --- reading ---------------------------------------------------------------------------


def read_rows(path: Path, progress: Progress | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, row) from a CSV or JSONL file, chosen by extension."""
    path = Path(path)
    if not path.is_file():
        raise LabelerError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        yield from _read_csv(path, progress)
    elif suffix in (".jsonl", ".ndjson"):
        yield from _read_jsonl(path, progress)
    else:
        raise LabelerError(f"{path}: unknown format {suffix!r}; use .csv or .jsonl")


def read_columns(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, tuple[str, ...]]]:
    """(line, values) of the named columns, each required to be non-empty (crowd and gold tables)."""
    for line, row in read_rows(Path(path)):
        values = tuple(str(row.get(k, "")).strip() for k in columns)
        if not all(values):
            raise LabelerError(f"{path}: line {line}: expected {', '.join(columns[:-1])} and {columns[-1]}")
        yield line, values


def _read_csv(path: Path, progress: Progress | None) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open("rb") as raw:
        # strict: a quote left open is an error, not a field that swallows the rest of the file
        reader = csv.reader(_decoded_lines(path, raw, progress), strict=True)
        line = 1
        try:
            header = next(reader, None)
            if not header:
                raise LabelerError(f"{path}: empty file, expected a header row")
            header = [h.strip() for h in header]
            if len(set(header)) != len(header):
                raise LabelerError(f"{path}: line 1: repeated column names in the header")
            while True:
                line = reader.line_num + 1
                values = next(reader, None)
                if values is None:
                    break
                if not values or values == [""]:
                    continue  # a blank line
                if len(values) != len(header):
                    yield line, {"__error__": f"{len(values)} values for {len(header)} header columns"}
                    continue
                yield line, dict(zip(header, values))
        except csv.Error as exc:
            raise LabelerError(f"{path}: line {line}: malformed CSV: {exc}") from None


def _decoded_lines(path: Path, raw, progress: Progress | None) -> Iterator[str]:
    """Decode line by line, so a bad byte is reported on its own line."""
    done = 0
    for line_no, blob in enumerate(raw, start=1):
        done += len(blob)
        if progress and line_no % 1000 == 0:
            progress(done)
        try:
            yield blob.decode("utf-8-sig" if line_no == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise LabelerError(f"{path}: line {line_no}: not UTF-8 text ({exc.reason})") from None
    if progress:
        progress(done)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON value (it cannot be stored as JSON)")


def _read_jsonl(path: Path, progress: Progress | None) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open("rb") as raw:
        for line_no, text in enumerate(_decoded_lines(path, raw, progress), start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text, parse_constant=_no_constant)
            except json.JSONDecodeError as exc:
                yield line_no, {"__error__": f"not valid JSON: {exc.msg}"}
                continue
            except ValueError as exc:
                yield line_no, {"__error__": str(exc)}
                continue
            if not isinstance(row, dict):
                yield line_no, {"__error__": "expected a JSON object"}
                continue
            yield line_no, row


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
