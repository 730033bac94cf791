"""The `labeler` command: a thin shell over the layers."""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy.exc import DBAPIError

from labeler import exporting, importing, scaffold
from labeler.errors import LabelerError
from labeler.models import Role, Split
from labeler.workspace import Workspace, open_workspace

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
    steps = ["edit labeler.yaml (label definitions) and guidelines.md"]
    steps += [f"labeler import items {Path(items).resolve()}"] if items else ["labeler import items FILE"]
    steps += [f"labeler import gold {Path(gold).resolve()}"] if gold else []
    err.print("Next, in that folder: " + "; ".join(steps) + ".", highlight=False)


DEMO_FOLDER = Path("labeler-demo")
DEMO_REVIEWER = "demo"


@command()
def demo(
    directory: Annotated[Path, typer.Argument(help="Folder for the demo project.")] = DEMO_FOLDER,
    as_json: JsonOpt = False,
) -> None:
    """Set up the bundled example project and run the whole loop on it: import, measure the
    annotators on gold, label what can be trusted, send the rest to review, export."""
    import secrets

    from labeler.users import add_user
    from prompts.annotators import build_askers
    from routing.flow import run_project

    started = time.perf_counter()
    root = scaffold.copy_example(directory)
    ws = open_workspace(root)
    steps: dict[str, Any] = {"project": str(root)}
    steps["import_items"] = _import(ws, root / "items.csv", gold=False, quiet=as_json).as_dict()
    steps["import_gold"] = _import(ws, root / "gold.csv", gold=True, quiet=as_json).as_dict()
    askers, skipped = build_askers(ws)
    steps["run"] = _with_run_progress(
        lambda on_start, on_answer: run_project(ws, askers, on_start=on_start, on_answer=on_answer), quiet=as_json)
    steps["run"]["skipped"] = skipped
    steps["status"] = exporting.project_status(ws)
    steps["export"] = {"file": str(root / "labels.jsonl"), "rows": exporting.export_to_path(ws, root / "labels.jsonl")}
    steps["answer_key"] = scaffold.score_against_answers(root / "labels.jsonl", root / "answers.csv")
    password = secrets.token_urlsafe(9)
    add_user(ws, DEMO_REVIEWER, Role.reviewer, password)
    steps["reviewer"] = {"name": DEMO_REVIEWER, "password": password}
    steps["seconds"] = round(time.perf_counter() - started, 2)
    if as_json:
        emit(steps)
        return
    out.print(f"[bold]Demo project[/] {root}")
    out.print(f"Imported {steps['import_items']['items_added']} items and {steps['import_gold']['gold_added']} gold labels.")
    _print_run(steps["run"])
    key, states = steps["answer_key"], steps["status"]["states"]
    out.print(f"\n[bold]{states['auto']} of {key['items']} new items labeled automatically[/], "
              f"{key['auto_accuracy']} right against the answer key (the guarantee: at least "
              f"{steps['run']['policy'].get('target_accuracy')} with probability {steps['run']['policy'].get('confidence')}); "
              f"{states['needs_review']} wait for review. {steps['seconds']} s in all.")
    folder = Path(root).resolve()
    here = folder if folder == Path.cwd().resolve() else os.path.relpath(folder)
    out.print("\nLook at the result:", highlight=False)
    out.print(f"  cd {here}", highlight=False)
    out.print("  labeler serve                    # the review UI: http://127.0.0.1:8000/", highlight=False)
    out.print(f"                                   # log in as {DEMO_REVIEWER} / {password}", highlight=False)
    out.print("  labeler eval --report eval.html  # each annotator measured on gold, with plots", highlight=False)
    out.print("  labeler export -o labels.csv     # every label with its confidence and votes", highlight=False)


# --- import -------------------------------------------------------------------------------


def _import(ws: Workspace, file: Path, *, gold: bool, split: Split | None = None, skip_bad: bool = False, quiet: bool = False):
    progress, advance = byte_progress(file, f"importing {'gold' if gold else 'items'}")
    with progress if not quiet else _null():
        if gold:
            report = importing.import_gold(ws, file, split=split, skip_bad=skip_bad, progress=advance)
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
            err.print(f"[red]{report.file}: {error}[/]", highlight=False, soft_wrap=True)
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
FileArg = Annotated[Path, typer.Argument(help="A .csv or .jsonl file; an `id` or `task` column names the item.")]


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
    skip_bad: SkipBadOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Import gold labels (`label`, optional `split`); rows may carry the item's fields too."""
    ws = open_workspace(project)
    _report_import(_import(ws, file, gold=True, split=split, skip_bad=skip_bad, quiet=as_json), as_json)


# --- status and export --------------------------------------------------------------------


@command()
def status(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """Counts of items per decision state, gold per split, votes per annotator."""
    ws = open_workspace(project)
    data = exporting.project_status(ws)
    if ws.engine.dialect.name == "postgresql":  # where `labeler worker` may be at work
        from labeler.jobs import queue_status

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
    fmt: Annotated[str, typer.Option("--format", "-f", help="jsonl or csv.")] = "jsonl",
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write one row per item: id, label, confidence, state and provenance (votes, versions)."""
    if fmt not in exporting.FORMATS:
        raise LabelerError(f"unknown format {fmt!r}; use jsonl or csv")
    ws = open_workspace(project)
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


# --- run and prompts ----------------------------------------------------------------------


AnnotatorOpt = Annotated[Optional[list[str]], typer.Option("--annotator", "-a", help="Only these annotators (repeatable).")]


@command()
def run(
    project: ProjectOpt = None,
    annotator: AnnotatorOpt = None,
    limit: Annotated[Optional[int], typer.Option(help="Ask about at most this many items (those first imported).")] = None,
    distributed: Annotated[bool, typer.Option(
        "--distributed", help="Hand the run to `labeler worker` processes (PostgreSQL) and return at once.")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Ask nobody: count the calls, tokens and cost the run could take.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Ask the annotators about every item that still needs their vote, then decide labels."""
    from prompts.annotators import build_askers
    from routing.flow import estimate, run_project

    ws = open_workspace(project)
    if dry_run:
        askers, skipped = build_askers(ws, annotator)
        guess = estimate(ws, askers, limit) | {"skipped": skipped}
        emit(guess) if as_json else _print_estimate(guess)
        return
    if distributed:
        from labeler.jobs import enqueue_run

        job = enqueue_run(ws, limit=limit, annotators=annotator)
        emit({"job": job}) if as_json else err.print(f"Run queued as job {job}; `labeler status` shows progress.")
        return
    askers, skipped = build_askers(ws, annotator)
    report = _with_run_progress(lambda on_start, on_answer: run_project(
        ws, askers, limit=limit, on_start=on_start, on_answer=on_answer), quiet=as_json)
    report["skipped"] = skipped
    from evals.drift import detect_drift

    report["drift"] = detect_drift(ws)
    failed = [a["name"] for a in report["annotators"] if a["asked"] and not a["voted"] and a["failed"]]
    if as_json:
        emit(report)
    else:
        _print_run(report)
        _print_drift(report["drift"])
    if failed:  # the run did not do what it was for: say so in the exit status too
        err.print(f"[bold red]every call to {', '.join(failed)} failed[/]", highlight=False)
        raise typer.Exit(2)


def _print_estimate(guess: dict) -> None:
    money = lambda v: "price unknown" if v is None else f"${v:.4f}"  # noqa: E731
    out.print(f"At most, for {guess['items']} items (calibration gold and new items; the cascade asks fewer):")
    for a in guess["annotators"]:
        out.print(f"  {a['annotator']}: {a['calls']} calls" + (f" ({a['cached']} more cached)" if a.get("cached") else "")
                  + f", {a['tokens']:,} tokens, {money(a['cost'])}", highlight=False)
    budget = guess["budget"]
    out.print(f"in all {money(guess['cost'])}; spent so far ${guess['project_spent']:.4f}; budget: "
              + ", ".join(f"{k} ${v:g}" for k, v in budget.items() if v is not None) or "none set", highlight=False)
    for name, reason in guess.get("skipped", {}).items():
        err.print(f"[yellow]{name} skipped: {reason}[/]", highlight=False)


def _print_drift(drift: dict) -> None:
    if drift.get("drift"):
        err.print(f"[bold yellow]drift: new items differ from the gold set (classifier AUC {drift['auc']}, "
                  f"p = {drift['p_value']}); the accuracy guarantee may not hold for them. Add some to gold, "
                  f"e.g. {', '.join(drift['propose_for_gold'][:10])}[/]", highlight=False)


def _with_run_progress(work: Callable, quiet: bool = False):
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


def _print_run(report: dict) -> None:
    table = Table(title=f"run {report['run_id']}: {report['items']} items in {report['seconds']} s")
    for column in ("annotator", "version", "asked", "votes", "abstained", "failed", "cost"):
        table.add_column(column, justify="left" if column in ("annotator", "version") else "right")
    for a in report["annotators"]:
        table.add_row(a["name"], a["version"][:16], str(a["asked"]), str(a["voted"]), str(a["abstained"]),
                      str(a["failed"]), f"${a['cost']:.4f}")
    out.print(table)
    for a in report["annotators"]:
        for kind, n in a["errors"].items():
            example = a.get("error_examples", {}).get(kind, "")
            err.print(f"[red]{a['name']}: {n} x {kind}" + (f" (e.g. {example})" if example != kind else "") + "[/]",
                      highlight=False)
        if a["stopped"]:
            err.print(f"[bold red]{a['name']} {a['stopped']}[/]", highlight=False)
    for a in report["annotators"]:
        notes = a.get("notes") or {}
        if notes.get("features"):
            scores = notes.get("cv_accuracy")
            why = (" (cross-validated accuracy " + ", ".join(f"{k} {v}" for k, v in scores.items()) + ")") if scores \
                else (f" ({notes['reason']})" if notes.get("reason") else "")
            out.print(f"{a['name']}: features {notes['features']}{why}", highlight=False)
    for name, reason in report.get("skipped", {}).items():
        err.print(f"[yellow]{name} skipped: {reason}[/]", highlight=False)
    if report.get("recorded"):
        for name, stats in report["recorded"].items():
            out.print(f"{name}: loaded {stats['votes']} recorded votes from {stats['workers']} workers")
    _print_policy(report["policy"])
    for name, check in report.get("honeypots", {}).items():
        verdict = "[bold red]bad day: its votes in this run are set aside[/]" if check.get("bad_day") else "ok"
        out.print(f"honeypots {name}: {check['right']}/{check['honeypots']} right "
                  f"(calibrated accuracy {check['calibrated_accuracy']}): {verdict}")
    if report.get("guideline_suspects"):
        err.print(f"[yellow]every annotator failed honeypots {', '.join(report['guideline_suspects'])}: "
                  "check the guideline on them[/]")
    out.print("decisions: " + (", ".join(f"{k} {v}" for k, v in report["decisions"].items()) or "none"))
    budget = report.get("budget") or {}
    if budget.get("run") is not None or budget.get("project") is not None:
        out.print(f"spent ${budget['spent']:.4f} this run, ${budget['project_spent']:.4f} in the project"
                  + (f"; [bold yellow]{budget['stopped']}: asking stopped[/]" if budget.get("stopped") else ""))
    if report.get("sent_to_review_early"):
        out.print(f"{report['sent_to_review_early']} items went to review before the last annotator: "
                  "none of the dearer ones could have lifted them to the level")


def _print_policy(policy: dict) -> None:
    if policy.get("reason"):
        err.print(f"[yellow]no automatic labels: {policy['reason']}[/]", highlight=False)
    if policy.get("lambda") is not None:
        out.print(f"accepting items whose posterior reaches {policy['lambda']:.6f}: accepted accuracy >= "
                  f"{policy['target_accuracy']} with probability {policy['confidence']:.2f} "
                  f"(lower bound on cross-fitted calibration gold {policy['accuracy_bound']:.3f})")
    if policy.get("calibrated_accuracy"):
        out.print("accuracy on calibration gold: " + ", ".join(f"{k} {v}" for k, v in policy["calibrated_accuracy"].items()))


@command(prompt_app, "show")
def prompt_show(
    item: Annotated[Optional[str], typer.Option(help="Item id (default: the first item).")] = None,
    version: Annotated[Optional[str], typer.Option(help="Prompt version name (default: the current guideline).")] = None,
    completion: Annotated[bool, typer.Option(help="The completion prompt the local model gets (a base model's).")] = False,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the exact messages an item would get."""
    from labeler import local_llm
    from labeler.runner import find_item
    from prompts.template import COMPLETION, TEMPLATE_ID
    from prompts.versions import resolve

    ws = open_workspace(project)
    task = resolve(ws, version, COMPLETION if completion else TEMPLATE_ID)
    ref = find_item(ws, item)
    messages = task.messages(ref.fields)
    if as_json:
        emit({"version": task.name, "hash": task.version, "item": ref.external_id, "messages": messages})
        return
    err.print(f"prompt {task.name} ({task.version}) for item {ref.external_id}")
    if completion:
        print(local_llm.flatten(messages))
        return
    for message in messages:
        out.rule(message["role"])
        print(message["content"])


@command(prompt_app, "list")
def prompt_list(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """The prompt versions in the store (the current guideline's is registered if new)."""
    from prompts.template import COMPLETION, TEMPLATE_ID
    from prompts.versions import list_versions, resolve

    ws = open_workspace(project)
    current = {template: resolve(ws, None, template).name for template in (TEMPLATE_ID, COMPLETION)}
    versions = list_versions(ws)
    if as_json:
        emit({"current": current[TEMPLATE_ID], "current_by_template": current, "versions": versions})
        return
    for v in versions:
        mark = "*" if current.get(v["template"]) == v["name"] else " "
        out.print(f"{mark} {v['name']}  {v['hash']}  {v['template']}  {v['created_at'][:19]}  {v['examples']} examples")


# --- evaluation ---------------------------------------------------------------------------


@command(name="eval")
def eval_command(
    project: ProjectOpt = None,
    annotator: AnnotatorOpt = None,
    prompt: Annotated[Optional[list[str]], typer.Option("--prompt", help="Prompt versions to compare (repeatable).")] = None,
    fail_if_worse: Annotated[Optional[str], typer.Option(help="Exit 1 if an entry is significantly worse than this version (or annotator@version).")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Write a self-contained HTML report with plots here.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Annotators and prompt versions on gold: accuracy with coverage, F1, kappa, calibration, cost, latency."""
    from evals.evaluate import evaluate, worse_than_baseline

    ws = open_workspace(project)
    results = _with_run_progress(lambda on_start, on_answer: evaluate(ws, annotator, prompt, fail_if_worse, on_answer),
                                 quiet=as_json)
    worse = worse_than_baseline(results) if fail_if_worse else []
    if report:
        from evals.report import write_report

        write_report(results, report)
    if as_json:
        emit(results | {"worse": worse})
    else:
        _print_eval(results)
        if report:
            err.print(f"Wrote {report}")
    if worse:
        err.print(f"[bold red]significantly worse than {fail_if_worse}: {', '.join(worse)}[/]")
        raise typer.Exit(1)


def _print_eval(report: dict) -> None:
    """One block per entry, so it reads in an 80-column terminal; --json has everything."""
    fmt = lambda v: "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731
    out.print(f"[bold]{report['gold_items']} gold items[/] (target accuracy {report['target_accuracy']})")
    for name, e in report["entries"].items():
        c = e["confidence"]
        out.print(f"\n[bold]{name}[/] ({e['asked']} asked)", highlight=False)
        out.print(f"  accuracy {fmt(e['accuracy'])} · coverage {fmt(e['coverage'])} · macro-F1 {fmt(e['macro_f1'])}"
                  f" · kappa {fmt(e['kappa'])}", highlight=False)
        out.print(f"  confidence: ECE {fmt(c['ece'])} · AUROC {fmt(c['auroc'])} · share acceptable at the target "
                  f"{fmt(c['auto_share'])}", highlight=False)
        out.print("  recall: " + " · ".join(f"{label} {fmt(v['recall'])}" for label, v in e["per_label"].items()),
                  highlight=False)
        out.print(f"  ${fmt(e['cost_per_1000'])} per 1,000 items · latency p50 {fmt(e['latency_ms']['p50'])} ms",
                  highlight=False)
    for c in report["comparisons"]:
        d = c["accuracy_difference"]
        out.print(f"\n{c['b']} vs {c['a']}: {d['difference']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}], "
                  f"McNemar p={c['mcnemar']['p_value']}: {c['verdict']}; differ on {len(c['differ'])} shown items",
                  highlight=False)


@command()
def metrics(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """Completion, states, labels per annotator and reviewer, agreement, automatic share, spend, honeypots."""
    from evals.project_metrics import project_metrics

    data = project_metrics(open_workspace(project))
    if as_json:
        emit(data)
        return
    out.print(f"[bold]{data['project']}[/]: {data['items']} items, completion {data['completion_rate']}, "
              f"automatic share {data['automatic_share']}, backlog {data['backlog']}, spend ${data['spend']:.4f}"
              + "".join(f", {k} budget ${v:g}" for k, v in data["budget"].items() if v is not None))
    out.print("states: " + ", ".join(f"{k} {v}" for k, v in data["states"].items()))
    out.print("labels per annotator: " + (", ".join(f"{k} {v}" for k, v in data["labels_per_annotator"].items()) or "none"))
    if data["labels_per_reviewer"]:
        out.print("labels per reviewer: " + ", ".join(f"{k} {v}" for k, v in data["labels_per_reviewer"].items()))
    a = data["agreement"]
    out.print(f"agreement over {a['items']} items: Fleiss' kappa {a['fleiss_kappa']}, Krippendorff's alpha {a['krippendorff_alpha']}")
    for name, runs in data["honeypots"].items():
        out.print(f"honeypots {name}: " + ", ".join(f"run {r['run']} {r['accuracy']}{' (bad day)' if r['bad_day'] else ''}" for r in runs))
    if data["drift"].get("drift") is False:
        out.print(f"no drift between gold and new items (p = {data['drift']['p_value']})")
    _print_drift(data["drift"])


@command(guideline_app, "suggest")
def guideline_suggest(
    project: ProjectOpt = None,
    per_pair: Annotated[int, typer.Option(help="Examples per label pair.")] = 5,
    as_json: JsonOpt = False,
) -> None:
    """Items reviewers overturned, grouped by label pair, as Markdown examples for the guideline."""
    from evals.disagreements import overturned, suggest_markdown

    groups = overturned(open_workspace(project))
    if as_json:
        emit([{"machine": m, "human": h, "items": items} for (m, h), items in groups.items()])
        return
    print(suggest_markdown(groups, per_pair), end="")


@command(user_app, "add")
def user_add(
    name: Annotated[str, typer.Argument(help="The user's name (their login).")],
    role: Annotated[Role, typer.Option(help="admin, manager, reviewer or expert.")] = Role.reviewer,
    token: Annotated[bool, typer.Option("--token", help="Make an API token (printed once) instead of asking a password.")] = False,
    password_stdin: Annotated[bool, typer.Option(help="Read the password from standard input.")] = False,
    project: ProjectOpt = None,
) -> None:
    """Give a user a role in this project: a new user gets a password (prompted, or read from stdin) or an
    API token (printed once); a user of another project sharing the store keeps theirs."""
    from labeler.users import add_user, exists

    ws = open_workspace(project)
    password = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif not token and not exists(ws, name):
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    made = add_user(ws, name, role, password, with_token=token)
    err.print(f"Created {role.value} {name}")
    if made:
        print(made)


USER_ACTIONS = {"disable": "Disable a user: no login, no token, every session ended.",
                "enable": "Enable a disabled user again.",
                "revoke-token": "Revoke a user's API token.",
                "logout": "End every session of a user, on every server."}


def _user_action(action: str):
    def change(name: Annotated[str, typer.Argument(help="The user's name.")], project: ProjectOpt = None) -> None:
        from labeler.users import change_user

        change_user(open_workspace(project), name, action)
        err.print(f"{name}: {action} done")

    change.__doc__ = USER_ACTIONS[action]
    return change


for _action in USER_ACTIONS:
    command(user_app, _action)(_user_action(_action))


@command(user_app, "passwd")
def user_passwd(
    name: Annotated[str, typer.Argument(help="The user's name.")],
    password_stdin: Annotated[bool, typer.Option(help="Read the password from standard input.")] = False,
    project: ProjectOpt = None,
) -> None:
    """Set a user's password (every session of theirs ends)."""
    from labeler.users import change_user

    ws = open_workspace(project)
    password = sys.stdin.readline().rstrip("\n") if password_stdin else \
        typer.prompt("new password", hide_input=True, confirmation_prompt=True)
    change_user(ws, name, "passwd", password=password)
    err.print(f"{name}: new password set")


@command(user_app, "new-token")
def user_new_token(name: Annotated[str, typer.Argument(help="The user's name.")], project: ProjectOpt = None) -> None:
    """Give a user a new API token (printed once; the old one stops working)."""
    from labeler.users import change_user

    print(change_user(open_workspace(project), name, "new-token"))


@command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 for every interface.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    insecure_cookies: Annotated[bool, typer.Option(
        "--insecure-cookies", help="Send the session cookie over plain HTTP on a non-loopback address (no TLS proxy).")] = False,
    max_body_kb: Annotated[int, typer.Option(min=1, help="Refuse request bodies larger than this (KiB).")] = 1024,
    project: ProjectOpt = None,
) -> None:
    """Open the review UI and its API (log in as a user made by `labeler user add`)."""
    import uvicorn

    from review_ui.app import create_app

    ws = open_workspace(project)
    loopback = host in ("127.0.0.1", "localhost", "::1")
    # The session cookie travels over HTTPS only, except on loopback (plain HTTP to this machine) or when told.
    secure = not (loopback or insecure_cookies)
    err.print(f"Review UI for {ws.config.name} on http://{host}:{port}/ (Ctrl-C stops it)")
    uvicorn.run(create_app(ws, secure_cookies=secure, max_body=max_body_kb * 1024), host=host, port=port, log_level="warning",
                proxy_headers=True, server_header=False)


@command()
def worker(
    concurrency: Annotated[int, typer.Option(help="Jobs this worker runs side by side.")] = 4,
    heartbeat: Annotated[float, typer.Option(help="Seconds between this worker's heartbeats.")] = 10.0,
    stalled_after: Annotated[float, typer.Option(
        help="Seconds without a heartbeat after which a worker counts as dead and its jobs are retried.")] = 30.0,
    project: ProjectOpt = None,
) -> None:
    """Take labeling jobs (from `labeler run --distributed`) until stopped; needs PostgreSQL."""
    import asyncio
    import logging

    from labeler import jobs
    from prompts.annotators import build_asker, build_askers
    from routing.flow import run_project

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    ws = open_workspace(project)
    jobs.conninfo(ws.engine.url)  # a clear error before anything starts on SQLite
    jobs.wiring.update(workspace=ws, build_asker=build_asker, build_askers=build_askers, run_project=run_project)
    asyncio.run(jobs.work(ws, concurrency=concurrency, heartbeat=heartbeat, stalled_after=stalled_after,
                          on_ready=lambda: err.print(f"Worker ready for {ws.config.name} (Ctrl-C stops it)")))


# --- aggregation --------------------------------------------------------------------------


@command()
def aggregate(
    votes: Annotated[Path, typer.Argument(help="A `task,worker,label` CSV or JSONL file.")],
    method: Annotated[str, typer.Option(help="mv, wmv, ds (Dawid-Skene) or onecoin.")] = "ds",
    gold: Annotated[Optional[Path], typer.Option(help="A `task,label` file: report accuracy.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write task,label,confidence CSV here.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Aggregate any crowd table into labels with confidence (no project needed)."""
    import csv

    from routing.aggregate import aggregate_file

    result = aggregate_file(votes, method, gold)
    if output:
        with output.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["task", "label", "confidence"])
            writer.writeheader()
            writer.writerows(result["labels"])
    if as_json:
        emit(result if not output else {k: v for k, v in result.items() if k != "labels"})
        return
    summary = f"{result['method']}: {result['items']} items, {result['votes']} votes, {result['workers']} workers, {result['seconds']} s"
    if "accuracy" in result:
        summary += f"; accuracy {result['accuracy']} on {result['gold_items']} gold items"
    err.print(summary)
    if not output:
        print("task,label,confidence")
        for row in result["labels"]:
            print(f"{row['task']},{row['label']},{row['confidence']}")


@command(name="calibrate")
def calibrate_command(project: ProjectOpt = None, annotator: AnnotatorOpt = None, as_json: JsonOpt = False) -> None:
    """Fit the worker model and the acceptance level on calibration gold (asks nobody)."""
    from prompts.annotators import build_askers
    from routing.flow import calibrate

    ws = open_workspace(project)
    askers, skipped = build_askers(ws, annotator)
    summary = calibrate(ws, askers).summary() | {"skipped": skipped}
    if as_json:
        emit(summary)
        return
    _print_policy(summary)
    for stage, labels in summary.get("thresholds", {}).items():
        out.print(f"  after {stage}: " + ", ".join(
            f"{label} >= {t['confidence']:.4f} (calibrated {t['calibrated']:.3f})" for label, t in labels.items()))


@command()
def replay(
    votes: Annotated[Path, typer.Argument(help="A `task,worker,label` file of recorded votes.")],
    gold: Annotated[Path, typer.Option(help="A `task,label` file.")],
    target_accuracy: Annotated[float, typer.Option(min=0.5, max=0.9999, help="Accuracy automatically accepted labels must reach.")] = 0.95,
    confidence: Annotated[float, typer.Option(min=0.5, max=0.9999, help="Probability that the guarantee holds.")] = 0.9,
    seed: Annotated[int, typer.Option(help="Picks the gold's folds and the order of equally skilled workers.")] = 0,
    order: Annotated[str, typer.Option(help="Buy each item's votes `skill` (best worker first) or `random`.")] = "skill",
    as_json: JsonOpt = False,
) -> None:
    """What-if: the cascade on historical votes, each vote bought one at a time."""
    from routing.aggregate import read_gold, read_votes
    from routing.replay import replay as run_replay

    try:
        result = run_replay(read_votes(votes), read_gold(gold), target_accuracy, confidence, seed, order=order)
    except ValueError as exc:
        raise LabelerError(str(exc)) from exc
    if as_json:
        emit(result)
        return
    oracle = result["oracle_auto_fraction"]
    out.print(
        f"{result['test_items']} gold items, each measured once ({result['folds']} folds): "
        f"{result['auto_fraction']:.1%} accepted automatically at accuracy {result['auto_accuracy']} "
        f"(target {target_accuracy}, confidence {confidence}); the oracle's share {oracle:.1%}"
        + (f", {result['oracle_ratio']:.0%} of it" if result["oracle_ratio"] is not None else "") + ".\n"
        f"Votes used {result['votes_used']} of {result['votes_available']} "
        f"({result['votes_used'] / result['votes_available']:.0%}); accuracy over all items {result['accuracy_all']} "
        f"(Dawid-Skene with every vote: {result['ds_accuracy']})."
    )


def main() -> None:  # pragma: no cover - the console script
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
