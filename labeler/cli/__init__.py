"""The `labeler` command: a thin shell over the layers, one module per command group.

This module holds what they share (the app and its groups, options, the error-reporting decorator,
output helpers); importing the groups at the end registers their commands."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy.exc import DBAPIError

from labeler import collector
from labeler.errors import LabelerError

app = typer.Typer(help="LLM-assisted labeling with measured quality and human fallback.", no_args_is_help=True)
import_app = typer.Typer(help="Import items or gold labels from CSV or JSONL.", no_args_is_help=True)
app.add_typer(import_app, name="import")
prompt_app = typer.Typer(help="Prompt versions compiled from the guideline.", no_args_is_help=True)
app.add_typer(prompt_app, name="prompt")
guideline_app = typer.Typer(help="The annotation guideline.", no_args_is_help=True)
app.add_typer(guideline_app, name="guideline")
user_app = typer.Typer(help="Reviewers, experts, managers and admins.", no_args_is_help=True)
app.add_typer(user_app, name="user")

err = Console(stderr=True)
out = Console()

ProjectOpt = Annotated[
    Optional[Path],
    typer.Option("--project", "-p", help="Project folder (default: the current folder or a parent with labeler.yaml)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON document on stdout.")]


def command(group: typer.Typer = app, name: str | None = None) -> Callable:
    """Register a command whose LabelerErrors print as messages (or JSON) and exit 1."""

    def register(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except (LabelerError, DBAPIError) as exc:
                # A store that is full, read-only or gone is reported by what it said, not as a traceback.
                message = f"the store refused: {exc.orig}" if isinstance(exc, DBAPIError) else str(exc)
                if kwargs.get("as_json"):
                    print(json.dumps({"error": message}))
                else:
                    err.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
                raise typer.Exit(1)

        return group.command(name)(wrapper)

    return register


def emit(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def byte_progress(path: Path, description: str):
    """A progress bar over a file's bytes, on stderr so --json output stays clean."""
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
        console=err, transient=True,
    )
    task = progress.add_task(description, total=Path(path).stat().st_size if Path(path).exists() else None)
    return progress, lambda done: progress.update(task, completed=done)




AnnotatorOpt = Annotated[Optional[list[str]], typer.Option("--annotator", "-a", help="Only these annotators (repeatable).")]


def with_run_progress(work: Callable, quiet: bool = False):
    """A live bar of calls, with votes, abstentions, errors and spend."""
    progress = Progress(
        TextColumn("labeling"), BarColumn(), TextColumn("{task.completed}/{task.total} calls"),
        TextColumn("{task.fields[abstained]} abstained, {task.fields[errors]} errors, ${task.fields[spend]:.4f}"),
        TimeRemainingColumn(), console=err, transient=True, disable=quiet,
    )
    task = progress.add_task("run", total=None, abstained=0, errors=0, spend=0.0)
    totals = {"abstained": 0, "errors": 0, "spend": 0.0}

    def on_answer(name, answer, error):
        if error:
            totals["errors"] += 1
        else:
            totals["abstained"] += answer.label is None
            totals["spend"] += answer.cost
        progress.update(task, advance=1, **totals)

    with progress:
        return work(lambda total: progress.update(task, total=total), on_answer)




def main() -> None:
    """The console script: the collector set for a command (see labeler.collector), then the command."""
    collector.for_commands()
    app()


# The command groups register themselves on `app` when imported, in the order `labeler --help` lists them.
# isort: off
from labeler.cli import project  # noqa: E402, F401
from labeler.cli import prompts  # noqa: E402, F401
from labeler.cli import runs  # noqa: E402, F401
from labeler.cli import evals  # noqa: E402, F401
from labeler.cli import review  # noqa: E402, F401
# isort: on
