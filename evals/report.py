"""A self-contained HTML report of an eval: tables and plots (PNG inlined), and the same data as JSON."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup


def png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _figures(report: dict) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")  # no screen
    import matplotlib.pyplot as plt

    figures = {}
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, entry in report["entries"].items():
        curve = entry["confidence"]["curve"]
        if curve:
            ax.plot([c for c, _ in curve], [a for _, a in curve], label=name)
    ax.axhline(report["target_accuracy"], color="grey", linestyle="--", linewidth=1, label="target")
    ax.set(xlabel="share accepted (most confident first)", ylabel="accuracy of accepted", title="Coverage and accuracy")
    ax.legend(fontsize=8)
    figures["coverage"] = png(fig)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    for name, entry in report["entries"].items():
        bins = entry["confidence"].get("reliability") or []
        if bins:
            ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o", label=name)
    ax.set(xlabel="confidence", ylabel="accuracy", title="Reliability", xlim=(0, 1), ylim=(0, 1.02))
    if ax.get_legend_handles_labels()[0]:  # no entry gives confidences (plain answers): no legend to draw
        ax.legend(fontsize=8)
    figures["reliability"] = png(fig)
    plt.close(fig)

    for name, entry in report["entries"].items():
        if entry.get("confusion") is None:  # label sets: per-label precision and recall instead
            continue
        labels, matrix = entry["confusion"]["labels"], entry["confusion"]["matrix"]
        fig, ax = plt.subplots(figsize=(1.2 + 0.7 * len(labels), 1.0 + 0.7 * len(labels)))
        ax.imshow(matrix, cmap="Blues")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set(xlabel="answered", ylabel="gold", title=name)
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                ax.text(j, i, str(value), ha="center", va="center", fontsize=8)
        figures[f"confusion:{name}"] = png(fig)
        plt.close(fig)
    return figures


def write_report(report: dict, path: Path) -> Path:
    env = Environment(loader=PackageLoader("evals"), autoescape=select_autoescape(["html"]))
    html = env.get_template("report.html").render(
        report=report, figures=_figures(report),
        # Raw JSON inside <script>: escaping would garble it, so only "</" is defused.
        data=Markup(json.dumps(report, default=str).replace("</", "<\\/")),
    )
    Path(path).write_text(html, encoding="utf-8")
    return Path(path)
