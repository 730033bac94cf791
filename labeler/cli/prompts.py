"""Prompt versions and the guideline: prompt show|list, guideline suggest."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from labeler.cli import (
    JsonOpt,
    ProjectOpt,
    command,
    emit,
    err,
    guideline_app,
    out,
    prompt_app,
)
from labeler.store.workspace import open_workspace


@command(prompt_app, "show")
def prompt_show(
    item: Annotated[Optional[str], typer.Option(help="Item id (default: the first item).")] = None,
    version: Annotated[Optional[str], typer.Option(help="Prompt version name (default: the current guideline).")] = None,
    completion: Annotated[bool, typer.Option(help="The completion prompt the local model gets (a base model's).")] = False,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the exact messages an item would get."""
    from labeler.annotators import local as local_llm
    from labeler.annotators.runner import find_item
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


