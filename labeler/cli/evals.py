"""Measurement: eval (annotators and prompt versions on gold), metrics."""

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
from labeler.cli.reports import print_drift
from labeler.store.workspace import open_workspace

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
    results = with_run_progress(lambda on_start, on_answer: evaluate(ws, annotator, prompt, fail_if_worse, on_answer),
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


def _task_figures(e: dict, fmt) -> str:
    """The figures of the entry's task type beside accuracy: kappa, label sets' F1 and Hamming loss, spans' F1."""
    if e.get("task") == "spans":
        return (f" · span F1 {fmt(e['exact']['f1'])} exact (P {fmt(e['exact']['precision'])}, R {fmt(e['exact']['recall'])})"
                f", {fmt(e['partial']['f1'])} partial")
    if e.get("task") == "multi_label":
        return f" · micro-F1 {fmt(e['micro_f1'])} · Hamming loss {fmt(e['hamming_loss'])}"
    return f" · kappa {fmt(e['kappa'])}"


def _print_eval(report: dict) -> None:
    """One block per entry, so it reads in an 80-column terminal; --json has everything."""
    fmt = lambda v: "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731
    out.print(f"[bold]{report['gold_items']} gold items[/] (target accuracy {report['target_accuracy']})")
    for name, e in report["entries"].items():
        c = e["confidence"]
        out.print(f"\n[bold]{name}[/] ({e['asked']} asked)", highlight=False)
        out.print(f"  accuracy {fmt(e['accuracy'])} · coverage {fmt(e['coverage'])} · macro-F1 {fmt(e['macro_f1'])}"
                  + _task_figures(e, fmt), highlight=False)
        out.print(f"  confidence: ECE {fmt(c['ece'])} · AUROC {fmt(c['auroc'])}", highlight=False)
        out.print(f"  share at the target in hindsight {fmt(c['auto_share'])} (no guarantee: see calibrate)",
                  highlight=False)
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
    if "pairwise_span_f1" in a:
        out.print(f"agreement over {a['items']} items: pairwise span F1 {a['pairwise_span_f1']}")
    else:
        out.print(f"agreement over {a['items']} items: Fleiss' kappa {a['fleiss_kappa']}, Krippendorff's alpha {a['krippendorff_alpha']}")
    for name, runs in data["honeypots"].items():
        out.print(f"honeypots {name}: " + ", ".join(f"run {r['run']} {r['accuracy']}{' (bad day)' if r['bad_day'] else ''}" for r in runs))
    if data["drift"].get("drift") is False:
        out.print(f"no drift between gold and new items (p = {data['drift']['p_value']})")
    print_drift(data["drift"])


