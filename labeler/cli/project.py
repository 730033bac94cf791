"""Project and data commands: init, demo, import items|gold, status, export."""

from __future__ import annotations

import os
import shutil
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from labeler.cli import (
    JsonOpt,
    ProjectOpt,
    byte_progress,
    command,
    emit,
    err,
    import_app,
    out,
    with_run_progress,
)
from labeler.cli.reports import print_run
from labeler.data import exports as exporting
from labeler.data import imports as importing
from labeler.data import projects as scaffold
from labeler.errors import LabelerError
from labeler.store.models import Role, Split
from labeler.store.workspace import Workspace, open_workspace

# --- init and demo ------------------------------------------------------------------------


@command()
def init(
    directory: Annotated[Path, typer.Argument(help="Folder for the new project (created if missing).")],
    name: Annotated[Optional[str], typer.Option(help="Project name (default: the folder's name).")] = None,
    items: Annotated[Optional[Path], typer.Option(help="An items file: the project's fields are its columns.")] = None,
    gold: Annotated[Optional[Path], typer.Option(help="A gold file: the project's labels are its labels.")] = None,
) -> None:
    """Create a working project: labeler.yaml and a guideline template."""
    root = scaffold.init_project(directory, name, items, gold)
    err.print(f"Created project [bold]{root.name}[/] in {root}")
    me = runnable_command(root)
    steps = ["edit labeler.yaml (label definitions) and guidelines.md"]
    steps += [f"{me} import items {Path(items).resolve()}"] if items else [f"{me} import items FILE"]
    if gold:
        counts = scaffold.label_counts(gold)
        rare = [f"{label!r} ({n} row{'s' if n > 1 else ''})" for label, n in counts.items()
                if n < max(scaffold.RARE_ROWS, scaffold.RARE_SHARE * sum(counts.values()))]
        if rare:
            err.print(f"[bold yellow]rare labels, each now a project label: {', '.join(rare)}: a typo, or a label "
                      "that needs more gold? Remove or merge them in labeler.yaml before importing the gold[/]",
                      highlight=False)
        has_split = scaffold.has_split_column(gold)
        if not has_split:
            err.print(f"[yellow]the gold has no `split` column: the import step below keeps "
                      f"{scaffold.HONEYPOT_SHARE:.0%} of it as honeypots (hidden checks of the annotators), the rest "
                      "calibrates[/]", highlight=False)
        steps += [f"{me} import gold {Path(gold).resolve()}"
                  + ("" if has_split else f" --honeypot-share {scaffold.HONEYPOT_SHARE}")]
    err.print("Next, in that folder: " + "; ".join(steps) + ".", highlight=False, soft_wrap=True)


def runnable_command(cwd: Path) -> str:
    """How to run `labeler` from `cwd` as things are: its name where the shell finds this very command,
    else the script beside this Python (a virtual environment not activated), else this Python's -m."""
    beside = Path(sys.executable).parent / "labeler"
    found = shutil.which("labeler")
    if found and beside.is_file() and Path(found).resolve() == beside.resolve():
        return "labeler"
    if beside.is_file():
        return min(os.path.relpath(beside, Path(cwd).resolve()), str(beside.absolute()), key=len)
    return f"{sys.executable} -m labeler.cli"


DEMO_FOLDER = Path("labeler-demo")


class TaskChoice(str, Enum):
    single_label = "single_label"
    multi_label = "multi_label"
    spans = "spans"

DEMO_REVIEWER = "demo"


@command()
def demo(
    directory: Annotated[Path, typer.Argument(help="Folder for the demo project.")] = DEMO_FOLDER,
    task: Annotated[TaskChoice, typer.Option(help="single_label: review sentiment; multi_label: the topics of "
                                                  "support messages; spans: the names in them.")] = TaskChoice.single_label,
    as_json: JsonOpt = False,
) -> None:
    """Set up the bundled example project and run the whole loop on it: import, measure the
    annotators on gold, label what can be trusted, send the rest to review, export."""
    import secrets

    from labeler.store.users import add_user
    from prompts.annotators import build_askers
    from routing.flow import run_project

    started = time.perf_counter()
    root = scaffold.copy_example(directory, task.value)
    ws = open_workspace(root)
    steps: dict[str, Any] = {"project": str(root)}
    steps["import_items"] = _import(ws, root / "items.csv", gold=False, quiet=as_json).as_dict()
    steps["import_gold"] = _import(ws, scaffold.example_file(root, "gold"), gold=True, quiet=as_json).as_dict()
    askers, skipped = build_askers(ws)
    steps["run"] = with_run_progress(
        lambda on_start, on_answer: run_project(ws, askers, on_start=on_start, on_answer=on_answer), quiet=as_json)
    steps["run"]["skipped"] = skipped
    steps["status"] = exporting.project_status(ws)
    steps["export"] = {"file": str(root / "labels.jsonl"), "rows": exporting.export_to_path(ws, root / "labels.jsonl")}
    steps["answer_key"] = scaffold.score_against_answers(root / "labels.jsonl",
                                                         scaffold.example_file(root, "answers"))
    password = secrets.token_urlsafe(9)
    add_user(ws, DEMO_REVIEWER, Role.reviewer, password)
    steps["reviewer"] = {"name": DEMO_REVIEWER, "password": password}
    steps["seconds"] = round(time.perf_counter() - started, 2)
    if as_json:
        emit(steps)
        return
    out.print(f"[bold]Demo project[/] {root}")
    out.print(f"Imported {steps['import_items']['items_added']} items and {steps['import_gold']['gold_added']} gold labels.")
    print_run(steps["run"])
    key, states = steps["answer_key"], steps["status"]["states"]
    out.print(f"\n[bold]{states['auto']} of {key['items']} new items labeled automatically[/], "
              f"{key['auto_accuracy']} right against the answer key (the guarantee: at least "
              f"{steps['run']['policy'].get('target_accuracy')} with probability {steps['run']['policy'].get('confidence')}); "
              f"{states['needs_review']} wait for review. {steps['seconds']} s in all.")
    folder = Path(root).resolve()
    here = folder if folder == Path.cwd().resolve() else os.path.relpath(folder)
    me = runnable_command(folder)
    out.print("\nLook at the result:", highlight=False)
    out.print(f"  cd {here}", highlight=False, soft_wrap=True)
    out.print(f"  {me} serve                    # the review UI: http://127.0.0.1:8000/", highlight=False, soft_wrap=True)
    out.print(f"  {' ' * len(me)}                          # log in as {DEMO_REVIEWER} / {password}", highlight=False, soft_wrap=True)
    out.print(f"  {me} eval --report eval.html  # each annotator measured on gold, with plots", highlight=False, soft_wrap=True)
    out.print(f"  {me} export -o labels.csv     # every label with its confidence and votes", highlight=False, soft_wrap=True)


# --- import -------------------------------------------------------------------------------


def _import(ws: Workspace, file: Path, *, gold: bool, split: Split | None = None, skip_bad: bool = False, quiet: bool = False,
            honeypot_share: float = 0.0):
    progress, advance = byte_progress(file, f"importing {'gold' if gold else 'items'}")
    with progress if not quiet else _null():
        if gold:
            report = importing.import_gold(ws, file, split=split, honeypot_share=honeypot_share, skip_bad=skip_bad,
                                           progress=advance)
        else:
            report = importing.import_items(ws, file, skip_bad=skip_bad, progress=advance)
    return report


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


SHOWN_ERRORS = 20


def _report_import(report: importing.ImportReport, as_json: bool) -> None:
    if as_json:
        emit(report.as_dict())
    else:
        shown = report.errors[:SHOWN_ERRORS]
        for error in shown:
            err.print(f"[red]{report.where(error)}[/]", highlight=False, soft_wrap=True)
        if report.bad_rows > len(shown):
            err.print(f"... and {report.bad_rows - len(shown)} more bad rows (--json lists {len(report.errors)})")
        if report.committed:
            err.print(
                f"{report.rows} rows: {report.items_added} items added, {report.items_unchanged} unchanged"
                + (f"; gold {report.gold_added} added, {report.gold_unchanged} unchanged" if report.gold_added or report.gold_unchanged else "")
                + (f"; {report.bad_rows} bad rows skipped" if report.bad_rows else "")
            )
    if not report.committed:
        if not as_json:
            err.print(f"[bold red]Nothing imported:[/] {report.bad_rows} bad rows. Fix them, or pass --skip-bad to import the rest.")
        raise typer.Exit(1)


SkipBadOpt = Annotated[bool, typer.Option("--skip-bad", help="Import the good rows and report the bad ones.")]
FileArg = Annotated[Path, typer.Argument(help="A .csv or .jsonl file (an `id` or `task` column names the item), or "
                                              "Label Studio tasks (.json: `data` is the item, annotations the gold).")]


@command(import_app, "items")
def import_items(file: FileArg, project: ProjectOpt = None, skip_bad: SkipBadOpt = False, as_json: JsonOpt = False) -> None:
    """Import items. Re-importing the same file changes nothing."""
    ws = open_workspace(project)
    _report_import(_import(ws, file, gold=False, skip_bad=skip_bad, quiet=as_json), as_json)


@command(import_app, "gold")
def import_gold(
    file: FileArg,
    project: ProjectOpt = None,
    split: Annotated[Optional[Split], typer.Option(help="Split for rows without a `split` column.")] = None,
    honeypot_share: Annotated[float, typer.Option(min=0.0, max=0.5, help=(
        "Of the rows without a `split`, this share (picked by their id) become honeypots."))] = 0.0,
    skip_bad: SkipBadOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Import gold labels (`label`, optional `split`); rows may carry the item's fields too."""
    ws = open_workspace(project)
    _report_import(_import(ws, file, gold=True, split=split, skip_bad=skip_bad, quiet=as_json,
                           honeypot_share=honeypot_share), as_json)
    if not as_json and not exporting.project_status(ws)["gold"].get("honeypot"):
        err.print("[bold yellow]no honeypots: the check that sets aside an annotator's votes on a bad day is off; "
                  "`--honeypot-share 0.15` (or a `split` column) keeps some gold as honeypots[/]", highlight=False)


# --- status and export --------------------------------------------------------------------


@command()
def status(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """Counts of items per decision state, gold per split, votes per annotator."""
    ws = open_workspace(project)
    data = exporting.project_status(ws)
    if ws.engine.dialect.name == "postgresql":  # where `labeler worker` may be at work
        from labeler.annotators.jobs import queue_status

        jobs = queue_status(ws)
        if jobs is not None:
            data["jobs"] = jobs
    emit(data) if as_json else _print_status(data)


def _print_status(data: dict) -> None:
    table = Table(title=f"{data['project']}: {data['items']} items")
    table.add_column("state")
    table.add_column("items", justify="right")
    for state, count in data["states"].items():
        table.add_row(state, str(count))
    out.print(table)
    out.print("gold: " + ", ".join(f"{k} {v}" for k, v in data["gold"].items()))
    caps = {k: v for k, v in data["budget"].items() if v is not None}
    out.print(f"spent ${data['spend']:.4f}" + ("; budget " + ", ".join(f"{k} ${v:g}" for k, v in caps.items())
                                             + ("; [bold yellow]the project's budget is spent[/]"
                                                if caps.get("project") is not None and data["spend"] >= caps["project"] else "")
                                             if caps else ""))
    if data["annotators"]:
        votes = Table(title="annotators")
        for column in ("annotator", "votes", "abstentions", "cost"):
            votes.add_column(column, justify="left" if column == "annotator" else "right")
        for a in data["annotators"]:
            votes.add_row(a["name"], str(a["votes"]), str(a["abstentions"]), f"${a['cost']:.4f}")
        out.print(votes)
    for task, states in data.get("jobs", {}).items():
        out.print(f"jobs {task}: " + ", ".join(f"{state} {count}" for state, count in sorted(states.items())))


@command()
def export(
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="File to write (default: stdout).")] = None,
    fmt: Annotated[Optional[str], typer.Option(
        "--format", "-f", help="jsonl, csv, parquet, label-studio (tasks, .json) or crowd (task,worker,label: "
                                "every vote, .crowd.csv); default: the output file's extension, jsonl on stdout.")] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write one row per item: id, label, confidence, state and provenance (votes, versions)."""
    fmt = fmt or (exporting.format_of(output) if output is not None else "jsonl")
    if fmt not in exporting.FORMATS:
        raise LabelerError(f"unknown format {fmt!r}; use {', '.join(exporting.FORMATS)}")
    if output is None and fmt == "parquet":
        raise LabelerError("Parquet is binary: name a file with -o")
    ws = open_workspace(project, read_only=True)
    if output is None:
        exporting.write_export(ws, sys.stdout, fmt)
        return
    progress = Progress(TextColumn("exporting"), BarColumn(), TextColumn("{task.completed} rows"), console=err, transient=True)
    task = progress.add_task("export", total=None)
    with progress:
        rows = exporting.export_to_path(ws, output, fmt, progress=lambda n: progress.update(task, completed=n))
    if as_json:
        emit({"file": str(output), "format": fmt, "rows": rows})
    else:
        err.print(f"Wrote {rows} rows to {output}")


