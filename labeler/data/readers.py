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
            yield line_no, row
