"""The configured annotators, each ready to ask: LLMs with their prompt version, the local model, the classifier."""

from __future__ import annotations

from labeler.annotators.classifier import ClassifierAsker
from labeler.annotators.llm import LLMAsker
from labeler.annotators.tagger import TaggerAsker
from labeler.config import LLMAnnotator, LocalAnnotator, ModelAnnotator, RecordedAnnotator
from labeler.errors import LabelerError
from labeler.store.workspace import Workspace
from prompts.template import COMPLETION, TEMPLATE_ID
from prompts.versions import resolve

# Cascade order when `cost_rank` is not set: free and fast first.
DEFAULT_RANK = {"model": 0.0, "local": 1.0, "llm": 2.0, "recorded": 3.0}


def local_config(config: LocalAnnotator) -> LLMAnnotator:
    from labeler.annotators import local as local_llm

    local_llm.register()
    return LLMAnnotator(
        name=config.name, kind="llm", model=local_llm.MODEL_NAME, prompt=config.prompt, debias=True,
        max_concurrency=config.max_concurrency, max_retries=0, timeout=600, cost_per_1k_tokens=0.0,
    )


def ordered(configs: list) -> list:
    """Annotators cheapest first (stable for equal ranks)."""
    return sorted(configs, key=lambda c: c.cost_rank if c.cost_rank is not None else DEFAULT_RANK[c.kind])


def build_asker(ws: Workspace, config, annotator_id: int, prompt: str | None = None):
    """An Asker for one configured annotator; `prompt` overrides its prompt version."""
    if isinstance(config, ModelAnnotator):
        asker = (TaggerAsker if ws.config.task == "spans" else ClassifierAsker)(config, annotator_id, ws)
        if not asker.ready:
            raise LabelerError(f"annotator {config.name}: {asker.reason}")
        return asker
    template = TEMPLATE_ID
    if isinstance(config, LocalAnnotator):  # a base model: the completion prompt
        if ws.config.task == "spans":
            raise LabelerError(f"annotator {config.name}: the embedded model does not mark spans (a 270M base model "
                               "cannot quote them reliably); use `kind: model` (a span tagger) or a chat model")
        config, template = local_config(config), COMPLETION
    if isinstance(config, LLMAnnotator):
        if config.samples > 1 and ws.config.task == "spans":
            raise LabelerError(f"annotator {config.name}: samples are read as shares of labels; spans take one answer")
        task = resolve(ws, prompt or config.prompt, template)
        if not task.spec.examples and config.model.startswith("local/"):
            raise LabelerError(f"annotator {config.name}: the local model needs few-shot examples "
                               "(gold of split `examples`, or examples in the guideline)")
        return LLMAsker(config, annotator_id, task, ws.engine)
    if isinstance(config, RecordedAnnotator):
        raise LabelerError(f"annotator {config.name}: recorded votes are loaded, not asked")
    raise LabelerError(f"annotator {config.name}: unknown kind")


def build_askers(ws: Workspace, names: list[str] | None = None) -> tuple[list, dict[str, str]]:
    """Askers for the configured annotators (all, or those named), cheapest first.

    Annotators that cannot be built (a classifier without enough labels, a missing key) are
    returned in `skipped` with the reason, so the others still run."""
    configs = [c for c in ws.config.annotators if not isinstance(c, RecordedAnnotator)]
    if names:
        unknown = sorted(set(names) - {c.name for c in ws.config.annotators})
        if unknown:
            raise LabelerError(f"unknown annotator(s): {', '.join(unknown)}")
        configs = [c for c in configs if c.name in names]
    ids = ws.annotator_ids()
    askers, skipped = [], {}
    for config in ordered(configs):
        try:
            askers.append(build_asker(ws, config, ids[config.name]))
        except LabelerError as exc:
            skipped[config.name] = str(exc).removeprefix(f"annotator {config.name}: ")
    return askers, skipped
