"""Export labels with provenance, and the project's counts for `labeler status`."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator, TextIO

from sqlalchemy import func, select, text

from labeler.errors import LabelerError
from labeler.store import models
from labeler.store.workspace import Workspace
from labeler.tasks import span_key

PAGE = 2000
MACHINE_STATES = (models.State.auto, models.State.needs_review)
FORMATS = ("jsonl", "csv", "label-studio", "crowd", "parquet")
HUMAN_STATES = ("gold", "confirmed")  # a Label Studio annotation; machines' labels are predictions


def iter_export_rows(ws: Workspace) -> Iterator[dict[str, Any]]:
    """One row per item: id, label, confidence, state, method, fields, gold and votes; an automatic label
    also carries what certified it (`certified`: the guarantee, its target and confidence, the level)."""
    Item, Decision, Vote, Gold = models.Item, models.Decision, models.Vote, models.GoldLabel
    with ws.session() as s:
        certified = {}
        for run_id, stats in s.execute(select(models.Run.id, models.Run.stats).where(
                models.Run.project_id == ws.project_id, models.Run.kind == "run")):
            policy = (stats or {}).get("policy") or {}
            if policy.get("lambda") is not None:
                certified[run_id] = {"guarantee": policy.get("guarantee", "high_probability"), "level": policy["lambda"],
                                     "target_accuracy": policy["target_accuracy"],
                                     "confidence": policy["confidence"] if policy.get("guarantee") != "expected" else None}
        task = ws.task
        annotators = {a.id: a.name for a in s.scalars(select(models.Annotator).where(models.Annotator.project_id == ws.project_id))}
        versions = {
            p.content_hash: p.name
            for p in s.scalars(select(models.PromptVersion).where(models.PromptVersion.project_id == ws.project_id))
        }
        last_id = 0
        while True:
            page = s.execute(
                select(Item, Decision, Gold)
                .outerjoin(Decision, Decision.item_id == Item.id)
                .outerjoin(Gold, Gold.item_id == Item.id)
                .where(Item.project_id == ws.project_id, Item.id > last_id)
                .order_by(Item.id)
                .limit(PAGE)
            ).all()
            if not page:
                return
            last_id = page[-1][0].id
            votes = defaultdict(list)
            texts = {item.id: item.fields.get(ws.config.fields[0]) for item, _, _ in page} if task.name == "spans" else {}
            for vote in s.scalars(
                select(Vote).where(Vote.item_id.in_([row[0].id for row in page])).order_by(Vote.id)
            ):
                votes[vote.item_id].append(
                    {
                        "annotator": annotators.get(vote.annotator_id, str(vote.annotator_id)),
                        "version": versions.get(vote.version, vote.version),
                        task.key: task.exported(vote.label, texts.get(vote.item_id)),
                        "probs": vote.probs,
                        "abstain_reason": vote.abstain_reason,
                        "cost": vote.cost,
                        "at": vote.created_at.isoformat(),
                    }
                )
            for item, decision, gold in page:
                row = {
                    "id": item.external_id,
                    task.key: task.exported(decision.label, texts.get(item.id)) if decision else None,
                    "confidence": decision.confidence if decision else None,
                    "state": decision.state.value if decision else "unlabeled",
                    "method": decision.method if decision else None,
                    "decided_by": (decision.details or {}).get("decided_by") if decision else None,
                    "gold": task.exported(gold.label, texts.get(item.id)) if gold else None,
                    "fields": item.fields,
                    "votes": votes.get(item.id, []),
                    "certified": certified.get((decision.details or {}).get("run"))
                    if decision is not None and decision.state == models.State.auto else None,
                }
                if task.key != "label":  # how sure the machines are of each label (P(it applies)) or span
                    machine = ((decision.details or {}).get("machine") or {}) if decision else {}
                    per_part = machine.get("label_confidence") if decision and decision.state in MACHINE_STATES else None
                    if task.key == "labels":
                        row["label_confidence"] = per_part
                    elif per_part and row["spans"]:
                        for span in row["spans"]:
                            span["confidence"] = per_part.get(span_key(span["start"], span["end"], span["label"]))
                yield row


def write_export(ws: Workspace, out: TextIO, fmt: str, progress=None) -> int:
    """Write every item to `out`; return the number of rows."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of {FORMATS}")
    if fmt == "crowd":
        return _write_crowd(ws, out, progress)
    rows = iter_export_rows(ws)
    count = 0
    if fmt == "label-studio":
        return _write_label_studio(ws, rows, out, progress)
    if fmt == "parquet":
        return _write_parquet(ws, rows, out, progress)
    if fmt == "jsonl":
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
            if progress:
                progress(count)
        return count
    # CSV: the item's fields become columns (the project's declared fields first, then every other
    # field any item has, in order of first appearance), votes and decided_by are JSON.
    field_names = list(ws.config.fields)
    field_names += [f for f in field_keys(ws) if f not in field_names]
    key = ws.task.key
    extra = ["label_confidence"] if key == "labels" else []
    columns = ["id", key, *extra, "confidence", "state", "method", "gold", *field_names, "decided_by", "votes", "certified"]
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        flat = {k: v for k, v in row.items() if k not in ("fields", "votes", "decided_by", "certified")}
        flat["certified"] = json.dumps(row["certified"]) if row["certified"] else ""
        for name in (key, "gold"):  # a label set: its labels joined by `|`, as gold files give them; spans: JSON
            if isinstance(flat[name], list):
                flat[name] = json.dumps(flat[name], ensure_ascii=False) if key == "spans" else "|".join(flat[name])
        if extra:
            flat["label_confidence"] = json.dumps(row["label_confidence"]) if row["label_confidence"] else ""
        flat.update({f: _cell(row["fields"].get(f)) for f in field_names})
        flat["decided_by"] = json.dumps(row["decided_by"]) if row["decided_by"] else ""
        flat["votes"] = json.dumps(row["votes"], ensure_ascii=False)
        writer.writerow({k: _inert(v) for k, v in flat.items()})
        count += 1
        if progress:
            progress(count)
    return count


def _write_label_studio(ws: Workspace, rows, out: TextIO, progress=None) -> int:
    """Label Studio tasks (a JSON array, written row by row): `data` is the item with its id; a gold or
    confirmed label is an annotation, a machine's a prediction with its confidence as `score` and the
    method as `model_version`; the choices' `from_name` is `label`, their `to_name` the first field."""
    key, to_name = ws.task.key, ws.config.fields[0]

    def result(answer) -> list[dict]:
        if key == "spans":  # Label Studio's Labels tag on a Text: one region per span
            return [{"from_name": "label", "to_name": to_name, "type": "labels",
                     "value": {"start": sp["start"], "end": sp["end"], "text": sp.get("text"), "labels": [sp["label"]]}}
                    for sp in answer]
        choices = answer if isinstance(answer, list) else [answer]
        return [{"from_name": "label", "to_name": to_name, "type": "choices", "value": {"choices": choices}}]

    count = 0
    out.write("[")
    for row in rows:
        task: dict[str, Any] = {"data": {**row["fields"], "id": row["id"]}}
        answer = row[key]
        if row["state"] in HUMAN_STATES and answer is not None:
            task["annotations"] = [{"result": result(answer), "ground_truth": row["state"] == "gold"}]
        elif answer is not None:
            task["predictions"] = [{"model_version": row["method"], "score": row["confidence"], "result": result(answer)}]
        out.write(("," if count else "") + "\n" + json.dumps(task, ensure_ascii=False))
        count += 1
        if progress:
            progress(count)
    out.write("\n]\n")
    return count


def _write_parquet(ws: Workspace, rows, out, progress=None) -> int:
    """Parquet, for Hugging Face datasets (`load_dataset("parquet", data_files=...)`): a column per item field
    (text; other values as JSON), the answer (a list for label sets), confidence, state, method, gold, and
    votes and certificate as JSON; written PAGE rows at a time, so memory stays flat."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    key = ws.task.key
    answer = pa.list_(pa.string()) if key == "labels" else pa.string()  # spans: as JSON
    fields = list(ws.config.fields) + [f for f in field_keys(ws) if f not in ws.config.fields]
    schema = pa.schema([("id", pa.string()), (key, answer), ("confidence", pa.float64()), ("state", pa.string()),
                        ("method", pa.string()), ("gold", answer), *[(f, pa.string()) for f in fields],
                        ("votes", pa.string()), ("certified", pa.string())])
    count = 0
    with pq.ParquetWriter(out, schema) as writer:
        batch: list[dict] = []
        for row in rows:
            flat = {k: row[k] for k in ("id", key, "confidence", "state", "method", "gold")}
            if key == "spans":
                flat |= {k: json.dumps(row[k], ensure_ascii=False) if row[k] is not None else None for k in (key, "gold")}
            flat |= {f: _text(row["fields"].get(f)) for f in fields}
            flat |= {"votes": json.dumps(row["votes"], ensure_ascii=False),
                     "certified": json.dumps(row["certified"]) if row["certified"] else None}
            batch.append(flat)
            count += 1
            if len(batch) >= PAGE:
                writer.write_table(pa.Table.from_pylist(batch, schema))
                batch = []
            if progress:
                progress(count)
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema))
    return count


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) or value is None else json.dumps(value, ensure_ascii=False)


def _write_crowd(ws: Workspace, out: TextIO, progress=None) -> int:
    """Every vote, machine and human, as a crowd table `task,worker,label` (crowd-kit's long format, what
    `labeler aggregate` and recorded annotators read): annotators by name, reviewers as `user:NAME`.
    Abstentions and "I don't know" are left out: they name no label."""
    Item, Vote, Task = models.Item, models.Vote, models.ReviewTask
    writer = csv.writer(out)
    writer.writerow(["task", "worker", "label"])
    count = 0
    with ws.session() as s:
        machines = s.execute(
            select(Item.external_id, models.Annotator.name, Vote.label).join(Vote, Vote.item_id == Item.id)
            .join(models.Annotator, models.Annotator.id == Vote.annotator_id)
            .where(Item.project_id == ws.project_id, Vote.label.is_not(None)).order_by(Vote.id))
        people = s.execute(
            select(Item.external_id, models.User.name, Task.label).join(Task, Task.item_id == Item.id)
            .join(models.User, models.User.id == Task.user_id)
            .where(Item.project_id == ws.project_id, Task.submitted_at.is_not(None), Task.label.is_not(None))
            .order_by(Task.id))
        for task, worker, label in [*machines, *((t, f"user:{w}", lab) for t, w, lab in people)]:
            writer.writerow([_inert(task), _inert(worker), _inert(label)])
            count += 1
            if progress:
                progress(count)
    return count


def field_keys(ws: Workspace) -> list[str]:
    """Every field name of the project's items, in order of first appearance (one pass in the store)."""
    if ws.engine.dialect.name == "sqlite":
        query = ("SELECT f.key FROM item, json_each(item.fields) AS f WHERE item.project_id = :p "
                 "GROUP BY f.key ORDER BY min(item.id), min(f.id)")
    else:
        query = ("SELECT f.key FROM item, json_each(item.fields) WITH ORDINALITY AS f(key, value, n) "
                 "WHERE item.project_id = :p GROUP BY f.key ORDER BY min(item.id), min(f.n)")
    with ws.engine.connect() as c:
        return list(c.execute(text(query), {"p": ws.project_id}).scalars())


# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection): OWASP's
# advice is to make it text with a leading apostrophe.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _inert(value: Any) -> Any:
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def _cell(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value


EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".json": "label-studio", ".crowd.csv": "crowd",
              ".parquet": "parquet"}


def format_of(path: Path) -> str:
    """The export format a file's extension names; an unknown one is an error, never JSONL by default."""
    name = Path(path).name.lower()
    suffix = ".crowd.csv" if name.endswith(".crowd.csv") else Path(path).suffix.lower()
    if suffix not in EXTENSIONS:
        raise LabelerError(f"{path}: unknown format {suffix or '(no extension)'!r}; name a .jsonl, .csv, .parquet, "
                           ".json (Label Studio) or .crowd.csv (task,worker,label) file, or give --format")
    return EXTENSIONS[suffix]


def export_to_path(ws: Workspace, path: Path, fmt: str | None = None, progress=None) -> int:
    fmt = fmt or format_of(path)
    if fmt not in FORMATS:  # before the file is opened: a bad format leaves no empty file behind
        raise ValueError(f"unknown format {fmt!r}; use one of {FORMATS}")
    if fmt == "parquet":  # binary
        with Path(path).open("wb") as out:
            return write_export(ws, out, fmt, progress)
    with Path(path).open("w", encoding="utf-8", newline="") as out:
        return write_export(ws, out, fmt, progress)


def project_status(ws: Workspace) -> dict[str, Any]:
    """Counts per decision state, gold per split, votes per configured annotator (a recorded
    annotator's workers included; annotators since removed from the project file are not shown)."""
    Item, Decision, Vote, Gold = models.Item, models.Decision, models.Vote, models.GoldLabel
    with ws.session() as s:
        items = s.execute(select(func.count()).select_from(Item).where(Item.project_id == ws.project_id)).scalar_one()

        def count_by(column, table):
            return dict(s.execute(
                select(column, func.count()).join(Item, Item.id == table.item_id)
                .where(Item.project_id == ws.project_id).group_by(column)
            ).all())

        states, gold = count_by(Decision.state, Decision), count_by(Gold.split, Gold)
        votes = s.execute(
            select(
                models.Annotator.name,
                func.count(Vote.id),
                func.count(Vote.label),
                func.coalesce(func.sum(Vote.cost), 0.0),
            )
            .select_from(models.Annotator)
            .outerjoin(Vote, Vote.annotator_id == models.Annotator.id)
            .where(models.Annotator.project_id == ws.project_id)
            .group_by(models.Annotator.name)
            .order_by(models.Annotator.name)
        ).all()
    spent = sum(float(cost) for *_, cost in votes)  # every annotator's, removed ones included
    configured = {a.name for a in ws.config.annotators}
    votes = [row for row in votes if row[0] in configured or row[0].split("/", 1)[0] in configured]
    by_state = {state.value: states.get(state, 0) for state in models.State}
    by_state["unlabeled"] = items - sum(states.values())
    return {
        "project": ws.config.name,
        "items": items,
        "spend": round(spent, 6),
        "budget": ws.config.budget.model_dump(),
        "states": by_state,
        "gold": {split.value: gold.get(split, 0) for split in models.Split},
        "annotators": [
            {"name": name, "votes": total, "abstentions": total - labelled, "cost": float(cost)}
            for name, total, labelled, cost in votes
        ],
    }
