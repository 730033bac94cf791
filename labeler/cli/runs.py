"""Runs and routing: run (and --dry-run), calibrate, replay, aggregate, worker."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from labeler.cli import (
    AnnotatorOpt,
    JsonOpt,
    ProjectOpt,
    command,
    emit,
    err,
    out,
    with_run_progress,
)
from labeler.cli.reports import print_drift, print_plan, print_policy, print_run, print_score_drift
from labeler.errors import LabelerError
from labeler.store.workspace import open_workspace


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
        from labeler.annotators.jobs import enqueue_run

        job = enqueue_run(ws, limit=limit, annotators=annotator)
        emit({"job": job}) if as_json else err.print(f"Run queued as job {job}; `labeler status` shows progress.")
        return
    askers, skipped = build_askers(ws, annotator)
    report = with_run_progress(lambda on_start, on_answer: run_project(
        ws, askers, limit=limit, on_start=on_start, on_answer=on_answer), quiet=as_json)
    report["skipped"] = skipped
    from evals.drift import detect_drift

    report["drift"] = detect_drift(ws)
    failed = [a["name"] for a in report["annotators"] if a["asked"] and not a["voted"] and a["failed"]]
    if as_json:
        emit(report)
    else:
        print_run(report)
        print_drift(report["drift"])
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

    from labeler.annotators import jobs
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
    """Fit the worker model and the acceptance level on calibration gold (asks nobody), and say what more
    gold would buy."""
    from labeler.config import RecordedAnnotator
    from prompts.annotators import build_askers
    from routing.flow import calibrate, gold_plan
    from routing.project import MIN_CALIBRATION
    from routing.store import calibration_votes

    ws = open_workspace(project)
    names = [c.name for c in ws.config.annotators if not isinstance(c, RecordedAnnotator)
             and (not annotator or c.name in annotator)]
    total, voted = calibration_votes(ws, names)
    missing = {name: n for name, n in voted.items() if n < MIN_CALIBRATION}
    if missing or total < MIN_CALIBRATION:  # say so now, before building annotators (a classifier embeds all gold)
        fewest = min([total, *voted.values()])
        needs = {"ready": False, "calibration_items": total, "voted": voted, "needs": MIN_CALIBRATION,
                 "reason": f"at most {fewest} calibration gold items voted by every annotator; "
                           f"at least {MIN_CALIBRATION} are needed"}
        if as_json:
            emit(needs)
            return
        err.print(f"[yellow]calibrate asks nobody: it measures the votes already in the store, and needs at least "
                  f"{MIN_CALIBRATION} calibration gold items voted by every annotator. Calibration gold: {total}; "
                  "voted on: " + ", ".join(f"{k} {v}" for k, v in voted.items()) + ". "
                  + ("`labeler import gold FILE` adds gold; " if total < MIN_CALIBRATION else "")
                  + "`labeler run` asks every annotator about the calibration gold first, then the new items "
                  "(`labeler run --limit 0` asks only the gold).[/]", highlight=False)
        return
    askers, skipped = build_askers(ws, annotator)
    policy = calibrate(ws, askers)
    summary = policy.summary() | {"skipped": skipped, "plan": gold_plan(ws, policy)}
    if as_json:
        emit(summary)
        return
    print_policy(summary)
    for stage, labels in summary.get("thresholds", {}).items():
        out.print(f"  after {stage}: " + ", ".join(
            f"{label} >= {t['confidence']:.4f} (calibrated {t['calibrated']:.3f})" for label, t in labels.items()))
    print_plan(summary["plan"], ws.config.routing.target_accuracy)


@command()
def replay(
    votes: Annotated[Path, typer.Argument(help="A `task,worker,label` file of recorded votes.")],
    gold: Annotated[Path, typer.Option(help="A `task,label` file.")],
    target_accuracy: Annotated[float, typer.Option(min=0.5, max=0.9999, help="Accuracy automatically accepted labels must reach.")] = 0.95,
    confidence: Annotated[float, typer.Option(min=0.5, max=0.9999, help="Probability that the guarantee holds.")] = 0.9,
    seed: Annotated[int, typer.Option(help="Picks the gold's folds and the order of equally skilled workers.")] = 0,
    order: Annotated[str, typer.Option(help="Buy each item's votes `skill` (best worker first) or `random`.")] = "skill",
    gold_share: Annotated[Optional[float], typer.Option(min=0.05, max=0.95, help=(
        "Out of sample: calibrate on this share of the gold (drawn by --seed) and score what is accepted on the "
        "rest, as new items."))] = None,
    guarantee: Annotated[str, typer.Option(help="high_probability or expected (with --gold-share).")] = "high_probability",
    items: Annotated[Optional[Path], typer.Option(help=(
        "Write every item's decision here (task,label,state,confidence): gold by its fold, the rest as new items."))] = None,
    as_json: JsonOpt = False,
) -> None:
    """What-if: the cascade on historical votes, each vote bought one at a time."""
    from routing.aggregate import read_gold, read_votes
    from routing.replay import holdout
    from routing.replay import replay as run_replay

    try:
        if gold_share is not None:
            result = holdout(read_votes(votes), read_gold(gold), target_accuracy, confidence, seed, gold_share,
                             order, guarantee, with_plan=True)
        else:
            decided = [] if items is not None else None
            result = run_replay(read_votes(votes), read_gold(gold), target_accuracy, confidence, seed, order=order,
                                decisions=decided)
    except ValueError as exc:
        raise LabelerError(str(exc)) from exc
    if items is not None and gold_share is None:
        import csv

        with open(items, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["task", "label", "state", "confidence"])
            writer.writerows(decided)
        err.print(f"Wrote {len(decided)} items to {items}")
    if as_json:
        emit(result)
        return
    if gold_share is not None:
        out.print(
            f"{result['calibration_items']} gold items calibrate, {result['new_items']} hidden ones stand for new items: "
            f"{result['auto_fraction']:.1%} accepted automatically at accuracy {result['auto_accuracy']} on their gold "
            f"(target {target_accuracy}, {guarantee}); the oracle's share {result['oracle_auto_fraction']:.1%}. "
            f"Votes used {result['votes_used']} of {result['votes_available']}.")
        print_score_drift(result["score_drift"])
        return
    oracle = result["oracle_auto_fraction"]
    out.print(
        f"{result['test_items']} gold items, each measured once ({result['folds']} folds): "
        f"{result['auto_fraction']:.1%} accepted automatically at accuracy {result['auto_accuracy']} "
        f"(target {target_accuracy}, confidence {confidence}); the oracle's share {oracle:.1%}"
        + (f", {result['oracle_ratio']:.0%} of it" if result["oracle_ratio"] is not None else "") + ".\n"
        f"Votes used {result['votes_used']} of {result['votes_available']} "
        f"({result['votes_used'] / result['votes_available']:.0%}); accuracy over all items {result['accuracy_all']} "
        f"(Dawid-Skene with every vote: {result['ds_accuracy']}).\n"
        f"With stop_when_futile off (items sent to review buy every remaining vote): votes used "
        f"{result['finished_votes_used']} ({result['finished_votes_used'] / result['votes_available']:.0%}), "
        f"accuracy over all items {result['finished_accuracy_all']}."
    )


