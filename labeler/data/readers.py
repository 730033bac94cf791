"""Reading CSV and JSONL files row by row, with line numbers: streaming, strict, one-line errors."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Any, Callable, Iterator

from labeler.errors import LabelerError

csv.field_size_limit(256 * 1024 * 1024)

Progress = Callable[[int], None]  # called with the bytes read so far


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
    elif suffix == ".json":
        yield from _read_label_studio(path, progress)
    elif suffix == ".parquet":
        yield from _read_parquet(path, progress)
    else:
        raise LabelerError(f"{path}: unknown format {suffix!r}; use .csv, .jsonl, .parquet or .json (Label Studio tasks)")


def csv_header(path: Path) -> list[str] | None:
    """A CSV file's column names (None for other formats, or a file with no header)."""
    if Path(path).suffix.lower() != ".csv" or not Path(path).is_file():
        return None
    with Path(path).open(encoding="utf-8-sig", errors="replace", newline="") as f:
        header = next(csv.reader(f), None)
    return [h.strip() for h in header] if header else None


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
            separator = next((name for sep, name in ((";", "semicolons"), ("\t", "tabs")) if sep in header[0]), None)
            if len(header) == 1 and separator:
                raise LabelerError(f"{path}: line 1: the header was read as one column ({header[0][:60]!r}): the "
                                   f"file is separated by {separator}, not commas; save it as comma-separated CSV")
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


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: Infinity in disguise
        raise ValueError(f"{text} is too large for a JSON number (it would be stored as Infinity)")
    return value


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # \ud800-\udfff: half of a pair, or a lone one


def _parse_json_line(text: str):
    """One JSONL value; a ValueError for what JSON allows but a store cannot keep or Python cannot parse."""
    try:
        row = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise ValueError("nested too deeply to read") from None
    if _SURROGATE_ESCAPE.search(text):  # pairs make one character; a lone half is no text at all
        try:
            json.dumps(row, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("a \\u escape names half of a surrogate pair: not a character") from None
    return row


def _read_jsonl(path: Path, progress: Progress | None) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open("rb") as raw:
        for line_no, text in enumerate(_decoded_lines(path, raw, progress), start=1):
            if not text.strip():
                continue
            try:
                row = _parse_json_line(text)
            except json.JSONDecodeError as exc:
                yield line_no, {"__error__": f"not valid JSON: {exc.msg}"}
                continue
            except ValueError as exc:
                yield line_no, {"__error__": str(exc)}
                continue
            if not isinstance(row, dict):
                yield line_no, {"__error__": "expected a JSON object"}
                continue
            yield line_no, from_prodigy(row) if "_input_hash" in row else row


PRODIGY_KEYS = ("_input_hash", "_task_hash", "_session_id", "_view_id", "_timestamp", "_annotator_id", "answer",
                "accept", "options", "meta", "tokens", "_is_binary", "config")


def from_prodigy(row: dict[str, Any]) -> dict[str, Any]:
    """A Prodigy annotation (it has `_input_hash`) as a row of ours: the id from `meta.id`, else `id`, else its
    input hash; an accepted answer gives the gold (`accept`: the chosen options, as labels; `spans`; a
    binary `label`); a rejected or ignored one gives none (`__no_gold__` says why)."""
    meta = row.get("meta") if isinstance(row.get("meta"), dict) else {}
    out = {k: v for k, v in row.items() if k not in PRODIGY_KEYS and k not in ("label", "spans")}
    out["id"] = meta.get("id", row.get("id", row["_input_hash"]))
    answer = row.get("answer", "accept")
    if answer != "accept":
        return out | {"__no_gold__": f"Prodigy answer {answer!r}"}
    if isinstance(row.get("accept"), list):  # choice interface: the options chosen
        out["labels"] = "|".join(str(c) for c in row["accept"])
    elif isinstance(row.get("spans"), list):
        out["spans"] = [{k: s.get(k) for k in ("start", "end", "label")} for s in row["spans"] if isinstance(s, dict)]
    elif "label" in row:
        out["label"] = row["label"]
    return out


def _read_label_studio(path: Path, progress: Progress | None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Label Studio's JSON export (a list of tasks): each task's `data` is the item (its `id` there, else the
    task's), and its first annotation that was not cancelled gives the gold: the choices of its first
    `choices` result, as `labels` joined by `|` (one choice: a label). Numbered by task, from 1. The file
    is read whole: Label Studio writes it as one array."""
    tasks = _label_studio_tasks(path)
    if progress:
        progress(path.stat().st_size)
    for number, task in enumerate(tasks, start=1):
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            yield number, {"__error__": f"task {number}: expected an object with `data` (a Label Studio task)"}
            continue
        row = dict(task["data"])
        row.setdefault("id", task.get("id"))
        answer = _annotated(task.get("annotations") or [])
        if answer is not None:
            row.update(answer)
        yield number, row


def _label_studio_tasks(path: Path) -> list:
    try:
        tasks = json.loads(path.read_text(encoding="utf-8-sig"), parse_constant=_no_constant, parse_float=_finite)
    except UnicodeDecodeError as exc:
        raise LabelerError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except (json.JSONDecodeError, ValueError, RecursionError) as exc:
        raise LabelerError(f"{path}: not Label Studio tasks: {getattr(exc, 'msg', exc)}") from None
    if isinstance(tasks, dict):
        tasks = [tasks]
    if not isinstance(tasks, list):
        raise LabelerError(f"{path}: expected a list of Label Studio tasks")
    return tasks


def read_vote_table(path: Path) -> Iterator[tuple[int, str, str, Any]]:
    """(line, task, worker, answer) of recorded votes: a `task,worker,label` table (CSV, JSONL; an empty label
    is the empty set of a label set), or Label Studio tasks whose `predictions` are the votes, each model
    version a worker (numbered by task)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        for number, task in enumerate(_label_studio_tasks(path), start=1):
            if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
                raise LabelerError(f"{path}: task {number}: expected an object with `data` (a Label Studio task)")
            item = task["data"].get("id", task.get("id"))
            for prediction in task.get("predictions") or []:
                answer = _annotated([prediction]) if isinstance(prediction, dict) else None
                if answer is not None and item is not None:
                    worker = str(prediction.get("model_version") or "prediction")
                    yield number, str(item), worker, next(iter(answer.values()))
        return
    for line, row in read_rows(path):
        task, worker = (str(row.get(k) or "").strip() for k in ("task", "worker"))
        if "__error__" in row or not task or not worker or row.get("label") is None:
            raise LabelerError(f"{path}: line {line}: expected task, worker and label")
        yield line, task, worker, row["label"]


def _annotated(annotations: list) -> dict | None:
    """The first annotation not cancelled: its choices as `labels` joined by `|`, or its `labels` regions
    (a span each) as `spans`."""
    for annotation in annotations:
        if not isinstance(annotation, dict) or annotation.get("was_cancelled"):
            continue
        results = [r for r in annotation.get("result") or [] if isinstance(r, dict)]
        for result in results:
            if result.get("type") == "choices":
                return {"labels": "|".join(str(c) for c in (result.get("value") or {}).get("choices") or [])}
        regions = [r.get("value") or {} for r in results if r.get("type") == "labels"]
        if regions:
            return {"spans": [{"start": v.get("start"), "end": v.get("end"), "label": label}
                              for v in regions for label in v.get("labels") or [None]]}
    return None


PARQUET_BATCH = 2000


def _read_parquet(path: Path, progress: Progress | None) -> Iterator[tuple[int, dict[str, Any]]]:
    """A Parquet file (a Hugging Face dataset's, or our export) batch by batch, never whole; rows numbered
    from 1. Values come as Python ones: lists and structs as lists and dicts."""
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow's errors are many kinds; each means the same here
        raise LabelerError(f"{path}: not a Parquet file ({exc})") from None
    number, size = 0, path.stat().st_size
    for batch in file.iter_batches(batch_size=PARQUET_BATCH):
        for row in batch.to_pylist():
            number += 1
            yield number, row
        if progress:
            progress(size * number // max(file.metadata.num_rows, 1))
