"""Reports that several commands print: a run's, its policy's, drift."""

from __future__ import annotations

from rich.table import Table

from labeler.cli import err, out


def print_drift(drift: dict) -> None:
    if drift.get("drift"):
        err.print(f"[bold yellow]drift: new items differ from the gold set (classifier AUC {drift['auc']}, "
                  f"p = {drift['p_value']}); the accuracy guarantee may not hold for them. Add some to gold, "
                  f"e.g. {', '.join(drift['propose_for_gold'][:10])}[/]", highlight=False)


def print_score_drift(drift: dict | None) -> None:
    if drift and drift.get("flagged"):
        err.print(f"[bold yellow]score drift: the new items' scores are not drawn like the calibration gold's "
                  f"(Mann-Whitney p = {drift['p_value']:.2g}); the guarantee may not hold for them. Add some to "
                  f"gold, e.g. {', '.join(drift.get('propose_for_gold', [])[:10])}[/]", highlight=False)


def print_run(report: dict) -> None:
    table = Table(title=f"run {report.get('run', report['run_id'])}: {report['items']} items in {report['seconds']} s")
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
    print_policy(report["policy"])
    print_score_drift(report.get("score_drift"))
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


def print_plan(plan: dict | None, target: float) -> None:
    if not plan:
        return
    best = plan["max_target"]
    out.print(f"this gold certifies targets up to {best}" if best else "this gold certifies no target from 0.99 to 0.51")
    out.print("automatic share of the gold now: " + ", ".join(f"{share:.0%} at {t}" for t, share in plan["auto_fraction_at"].items()))
    out.print(f"with more gold, at {target} (estimated by resampling this gold): " + ", ".join(
        f"{row['gold_items']} items {row['auto_fraction']:.0%}" for row in plan["gold_plan"]))
    if plan.get("experts_next"):
        out.print("send to experts next (scored nearest the level, where the test is decided): "
                  + ", ".join(plan["experts_next"][:20]), highlight=False)


def print_policy(policy: dict) -> None:
    if policy.get("reason"):
        would = policy.get("max_target")
        err.print(f"[yellow]no automatic labels: {policy['reason']}"
                  + (f"; a target of {would} passes now (routing.target_accuracy), or `labeler calibrate` "
                     "says how much more gold the target needs" if would else
                     "; `labeler calibrate` says how much more gold would buy") + "[/]", highlight=False)
    if policy.get("lambda") is not None and policy.get("guarantee") == "expected":
        out.print(f"accepting items whose posterior reaches {policy['lambda']:.6f}: accepted accuracy >= "
                  f"{policy['target_accuracy']} in expectation over draws of the gold (estimated on "
                  f"cross-fitted calibration gold: {policy['accuracy_bound']:.3f})")
    elif policy.get("lambda") is not None:
        out.print(f"accepting items whose posterior reaches {policy['lambda']:.6f}: accepted accuracy >= "
                  f"{policy['target_accuracy']} with probability {policy['confidence']:.2f} "
                  f"(lower bound on cross-fitted calibration gold {policy['accuracy_bound']:.3f})")
    certificate = policy.get("certificate") or {}
    if policy.get("lambda") is not None and certificate:
        out.print(f"certificate: {certificate['calibration_items']} calibration gold items, "
                  f"{certificate['gold_accepted']} of them in the accepted region, {certificate['gold_accepted_wrong']} wrong")
    if certificate.get("warning"):
        err.print(f"[bold yellow]thin gold: {certificate['warning']}[/]", highlight=False)
    if policy.get("calibrated_accuracy"):
        out.print("accuracy on calibration gold: " + ", ".join(f"{k} {v}" for k, v in policy["calibrated_accuracy"].items()))
