"""A project over time, for the managers' overview: items by state per day, each run's automatic share and
honeypot accuracy per annotator, reviewers' accuracy on hidden gold per day; and those as plots."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import select

from evals.project_metrics import honeypot_history
from evals.report import png
from labeler.store import models
from labeler.store.workspace import Workspace


def trends(ws: Workspace) -> dict:
    Item, Decision, Task, Gold, User = models.Item, models.Decision, models.ReviewTask, models.GoldLabel, models.User
    with ws.session() as s:
        decided = s.execute(select(Decision.state, Decision.updated_at).join(Item, Item.id == Decision.item_id)
                            .where(Item.project_id == ws.project_id)).all()
        runs = s.execute(select(models.Run.id, models.Run.stats).where(
            models.Run.project_id == ws.project_id, models.Run.kind == "run").order_by(models.Run.id)).all()
        answered = s.execute(
            select(User.name, Task.submitted_at, Task.label, Gold.label).join(User, User.id == Task.user_id)
            .join(Item, Item.id == Task.item_id).join(Gold, Gold.item_id == Task.item_id)
            .where(Item.project_id == ws.project_id, Task.submitted_at.is_not(None), Task.label.is_not(None),
                   Gold.split != models.Split.examples)).all()
    by_day: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for state, at in decided:  # each item where it stands now, on the day it got there
        by_day[at.date().isoformat()][state.value] += 1
    run_rows = []
    for number, (run_id, stats) in enumerate(runs, start=1):
        decisions = (stats or {}).get("decisions") or {}
        total = sum(v for k, v in decisions.items() if k in ("auto", "needs_review"))
        run_rows.append({"run": number, "id": run_id, "automatic_share": round(decisions.get("auto", 0) / total, 4)
                         if total else None})
    reviewers: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for name, at, label, gold in answered:
        counts = reviewers[name][at.date().isoformat()]
        counts[0] += label == gold
        counts[1] += 1
    return {
        "states_by_day": {day: dict(states) for day, states in sorted(by_day.items())},
        "runs": run_rows,
        "honeypots": honeypot_history(ws),
        "reviewers_on_gold": {name: {day: {"right": r, "of": n} for day, (r, n) in sorted(days.items())}
                              for name, days in sorted(reviewers.items())},
    }


def trend_figures(data: dict) -> dict[str, str]:
    """The trends as PNG data URLs: states per day (stacked bars), runs (automatic share and honeypot accuracy
    per annotator), reviewers' accuracy on hidden gold per day. A figure with nothing to draw is left out."""
    import matplotlib

    matplotlib.use("Agg")  # no screen
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figures = {}
    days = list(data["states_by_day"])
    if days:
        fig, ax = plt.subplots(figsize=(5.5, 3.2))
        bottom = [0] * len(days)
        for state in [s.value for s in models.State]:
            counts = [data["states_by_day"][d].get(state, 0) for d in days]
            if any(counts):
                ax.bar(days, counts, bottom=bottom, label=state)
                bottom = [b + c for b, c in zip(bottom, counts)]
        ax.set(ylabel="items", title="Items by state, by the day they got there")
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        ax.legend(fontsize=8)
        figures["states"] = png(fig)
        plt.close(fig)
    if data["runs"]:
        fig, ax = plt.subplots(figsize=(5.5, 3.2))
        ax.plot([r["run"] for r in data["runs"]], [r["automatic_share"] for r in data["runs"]], marker="o",
                label="automatic share", color="black")
        number = {r["id"]: r["run"] for r in data["runs"]}
        for name, history in data["honeypots"].items():
            points = [(number[h["run"]], h["accuracy"]) for h in history if h["run"] in number]
            if points:
                ax.plot(*zip(*points), marker=".", linestyle="--", label=f"{name} on honeypots")
        ax.set(xlabel="run", ylim=(0, 1.02), title="Runs: automatic share, annotators on honeypots")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
        figures["runs"] = png(fig)
        plt.close(fig)
    if data["reviewers_on_gold"]:
        fig, ax = plt.subplots(figsize=(5.5, 3.2))
        for name, by_day in data["reviewers_on_gold"].items():
            ax.plot(list(by_day), [v["right"] / v["of"] for v in by_day.values()], marker="o", label=name)
        ax.set(ylabel="accuracy", ylim=(0, 1.02), title="Reviewers on hidden gold, by day")
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        ax.legend(fontsize=8)
        figures["reviewers"] = png(fig)
        plt.close(fig)
    return figures
