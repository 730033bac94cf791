"""The project file, `labeler.yaml`: loading, validation, and finding it like git finds its repo."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from labeler.errors import LabelerError

PROJECT_FILE = "labeler.yaml"
PROJECT_ENV = "LABELER_PROJECT"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _AnnotatorBase(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    # Cascade order: cheaper annotators are asked first. None: from the kind (local and model first).
    cost_rank: float | None = None


class Deployment(_Strict):
    """One server of a model. Several spread the load and stand in for each other (litellm's Router)."""

    model: str = Field(min_length=1)
    api_base: str | None = None
    api_key_env: str | None = None
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)


class LLMAnnotator(_AnnotatorBase):
    """Any model litellm reaches: hosted APIs, vLLM, Ollama, llama.cpp servers."""

    kind: Literal["llm"]
    model: str = Field(min_length=1)
    api_base: str | None = None
    api_key_env: str | None = None  # name of the environment variable holding the key, never the key
    prompt: str | None = None  # prompt version name; None: the newest
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    max_concurrency: int = Field(default=16, ge=1, le=1024)
    rpm: int | None = Field(default=None, ge=1)
    timeout: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=6, ge=0, le=50)
    logprobs: bool = True  # ask for token logprobs where the provider gives them
    # Ask this many answers per item at `temperature` and take their shares as the probabilities: a
    # confidence for models that give no logprobs (each sample a call, cached and paid like any other).
    samples: int = Field(default=1, ge=1, le=32)
    # Divide answers by the model's leaning on content-free items (base models; `local` always does).
    debias: bool = False
    cost_per_1k_tokens: float | None = Field(default=None, ge=0)
    # Servers of this one model (`model` then names the model they serve, for the cache and reports).
    deployments: list[Deployment] = Field(default_factory=list)
    # Send each stage's questions as one provider batch (files + batches API: about half the price, answers
    # within the provider's window); polled from every `batch_poll_seconds`, backing off to 10 minutes, for
    # at most `batch_max_wait` seconds (a later run collects a batch still running).
    batch: bool = False
    batch_poll_seconds: float = Field(default=10.0, gt=0)
    batch_max_wait: float = Field(default=86400.0, gt=0)

    @model_validator(mode="after")
    def _samples_vary(self) -> "LLMAnnotator":
        if self.samples > 1 and "temperature" not in self.model_fields_set:
            self.temperature = SAMPLING_TEMPERATURE
        if self.samples > 1 and self.temperature == 0:
            raise ValueError(f"annotator {self.name}: samples: {self.samples} at temperature 0 are one answer "
                             f"{self.samples} times; set a temperature (default with samples: {SAMPLING_TEMPERATURE})")
        if self.batch and (self.samples > 1 or self.deployments):
            raise ValueError(f"annotator {self.name}: batch: true sends one request per item to one endpoint; "
                             "it takes neither samples nor deployments")
        return self


SAMPLING_TEMPERATURE = 0.7


class LocalAnnotator(_AnnotatorBase):
    """The embedded LLM (Gemma 3 270M run in process); no key, no network."""

    kind: Literal["local"]
    prompt: str | None = None
    max_concurrency: int = Field(default=1, ge=1, le=8)


class ModelAnnotator(_AnnotatorBase):
    """A scikit-learn classifier trained on gold and confirmed labels."""

    kind: Literal["model"]
    min_labels: int = Field(default=20, ge=2)
    retrain_every: int = Field(default=50, ge=1)
    # tfidf, the embedded model's embeddings, or whichever cross-validates better on the labels.
    features: Literal["tfidf", "embeddings", "auto"] = "auto"


class RecordedAnnotator(_AnnotatorBase):
    """Replays votes from a `task,worker,label` table; each worker becomes an annotator."""

    kind: Literal["recorded"]
    file: Path


AnnotatorConfig = Annotated[
    Union[LLMAnnotator, LocalAnnotator, ModelAnnotator, RecordedAnnotator], Field(discriminator="kind")
]


class Qualification(_Strict):
    """Before real items, a reviewer answers `items` gold items and needs `pass_mark` of them right; a
    reviewer whose hidden-gold accuracy over the last `window` falls below it is paused and re-qualifies."""

    items: int = Field(default=0, ge=0, le=200)  # 0: no qualification
    pass_mark: float = Field(default=0.85, gt=0.0, le=1.0)
    cooldown_hours: float = Field(default=24.0, ge=0.0)  # after a failed attempt, before the next
    window: int = Field(default=20, ge=5, le=1000)


DONT_KNOW_REASONS = ["Not enough context", "Not about this task", "More than one label fits", "Text unreadable or empty"]


class RoutingConfig(_Strict):
    target_accuracy: float = Field(default=0.95, gt=0.0, lt=1.0)
    confidence: float = Field(default=0.9, gt=0.0, lt=1.0)  # of the finite-sample accuracy bound
    # high_probability: accepted accuracy >= target with probability >= confidence over draws of the gold;
    # expected: >= target on average over draws (conformal selection with Benjamini-Hochberg), more accepted.
    guarantee: Literal["high_probability", "expected"] = "high_probability"
    method: str = "dawid_skene"
    # An item no annotator left could lift to the level goes to review without asking them (the
    # votes saved are its remaining ones); false: it gets every vote, so the suggestion a reviewer
    # sees, and the aggregate of an item nobody reviews, is that of every annotator.
    stop_when_futile: bool = True
    review_overlap: int = Field(default=1, ge=1, le=10)  # reviewers per item
    # random: open items are offered in random order, as hidden gold is, so order tells no gold apart;
    # import: in the order they were imported (threads, time series), where order may give gold away.
    review_order: Literal["random", "import"] = "random"
    review_lease_minutes: float = Field(default=10.0, gt=0)  # a leased item returns to the queue after this
    review_gold_share: float = Field(default=0.1, ge=0.0, le=0.5)  # hidden gold among a reviewer's items
    review_blind_share: float = Field(default=0.2, ge=0.0, le=1.0)  # items shown with no machine view
    review_qualification: Qualification = Field(default_factory=Qualification)
    review_dont_know_reasons: list[str] = Field(default_factory=lambda: list(DONT_KNOW_REASONS))
    review_dont_know_cap: float = Field(default=0.1, gt=0.0, le=1.0)  # share of a reviewer's last 50 answers
    # The machines' suggestion is preselected (Enter accepts it) only at this calibrated confidence or more.
    review_preselect_min: float = Field(default=0.5, ge=0.0, le=1.0)


class Budget(_Strict):
    """Spend caps, in the currency of litellm's prices (US dollars): asking stops when one is reached."""

    run: float | None = Field(default=None, gt=0)
    project: float | None = Field(default=None, gt=0)


class PromptSettings(_Strict):
    shots: int = Field(default=8, ge=0, le=64)  # few-shot examples per prompt
    selection: Literal["fixed", "tfidf"] = "fixed"  # the same examples for all items, or the nearest


class ProjectConfig(_Strict):
    name: str = Field(min_length=1)
    # single_label: one label per item; multi_label: any number of the labels per item (none included);
    # spans: typed character ranges in the one text field (`labels` are the types).
    task: Literal["single_label", "multi_label", "spans"] = "single_label"
    labels: dict[str, str] = Field(min_length=1)  # label -> one-line definition
    # How the review screen names a label (default: the label with `_` as spaces, capitalised).
    display_names: dict[str, str] = Field(default_factory=dict)
    fields: list[str] = Field(default_factory=lambda: ["text"], min_length=1)
    guidelines: Path = Path("guidelines.md")
    # An item whose fields hold more characters than this is refused at import (a prompt cannot take it).
    max_item_chars: int = Field(default=16_000_000, ge=1)
    annotators: list[AnnotatorConfig] = Field(default_factory=list)
    prompt: PromptSettings = Field(default_factory=PromptSettings)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    budget: Budget = Field(default_factory=Budget)

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_as_strings(cls, value):
        # YAML reads `0:` and `1:` as integers; labels are strings everywhere else.
        if isinstance(value, dict):
            return {str(k): v for k, v in value.items()}
        return value

    @field_validator("labels")
    @classmethod
    def _labels_clean(cls, value: dict[str, str]) -> dict[str, str]:
        for label in value:
            if not label.strip() or label != label.strip():
                raise ValueError(f"label {label!r} is empty or has surrounding spaces")
        return value

    @model_validator(mode="after")
    def _labels_fit_task(self) -> "ProjectConfig":
        if self.task == "single_label" and len(self.labels) < 2:
            raise ValueError("a single_label project needs at least 2 labels (or `task: multi_label`)")
        if self.task != "single_label":
            bad = [label for label in self.labels if any(c in label for c in "|,;:")]
            if bad:
                raise ValueError(f"{self.task} labels cannot hold '|', ',', ';' or ':' (they join a set): {', '.join(bad)}")
        if self.task == "spans" and len(self.fields) != 1:
            raise ValueError(f"a spans project finds spans in one text field; `fields` names {len(self.fields)}")
        return self

    @model_validator(mode="after")
    def _unique_annotators(self) -> "ProjectConfig":
        names = [a.name for a in self.annotators]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"annotator names must be unique; repeated: {', '.join(dupes)}")
        return self

    @property
    def label_names(self) -> list[str]:
        return list(self.labels)

    def display_name(self, label: str) -> str:
        return self.display_names.get(label) or (label[:1].upper() + label[1:]).replace("_", " ")

    @model_validator(mode="after")
    def _display_names_known(self) -> "ProjectConfig":
        unknown = sorted(set(self.display_names) - set(self.labels))
        if unknown:
            raise ValueError(f"display_names for labels the project does not have: {', '.join(unknown)}")
        return self


class Project(BaseModel):
    """A loaded project file and the folder it lives in."""

    root: Path
    config: ProjectConfig

    @property
    def guidelines_path(self) -> Path:
        return (self.root / self.config.guidelines).resolve()

    def guidelines_text(self) -> str:
        path = self.guidelines_path
        if not path.is_file():
            raise LabelerError(f"{self.root / PROJECT_FILE}: guidelines file {path} not found")
        return path.read_text(encoding="utf-8")

    def resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else (self.root / path).resolve()


def find_project_dir(start: Path | None = None) -> Path:
    """The folder holding labeler.yaml: `start` (or $LABELER_PROJECT, or the cwd) or one of its parents."""
    if start is not None:
        start = Path(start).resolve()
        if not (start / PROJECT_FILE).is_file():
            raise LabelerError(f"no {PROJECT_FILE} in {start}")
        return start
    here = Path(os.environ.get(PROJECT_ENV) or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / PROJECT_FILE).is_file():
            return folder
    raise LabelerError(f"no {PROJECT_FILE} in {here} or its parents; run `labeler init DIR` or pass --project")


def load_project(start: Path | None = None) -> Project:
    root = find_project_dir(start)
    return Project(root=root, config=parse_project_file(root / PROJECT_FILE))


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML would keep the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} is given twice (first on line {seen[key]})", key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def parse_project_file(path: Path) -> ProjectConfig:
    """Validate a project file; every problem is reported with its path and line in the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise LabelerError(f"{path}: line {line}: not UTF-8 text ({exc.reason})") from None
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        _refuse_alias_bombs(node)
        data = loader.construct_document(node) if node is not None else None
        lines = _line_index(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise LabelerError(f"{path}: {where}not valid YAML: {problem}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise LabelerError(f"{path}: expected a mapping of settings at the top level")
    try:
        return ProjectConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = _clean_loc(error["loc"])
            where = ".".join(str(part) for part in loc) or "(top level)"
            line = _nearest_line(lines, loc)
            problems.append(f"  {where}{f' (line {line})' if line else ''}: {error['msg']}")
        raise LabelerError(f"{path}: {len(problems)} problem(s):\n" + "\n".join(problems)) from None


MAX_YAML_VALUES = 100_000  # a project file has a few hundred; aliases nested in aliases can make billions


def _refuse_alias_bombs(root) -> None:
    """Count the values the document holds once its aliases are expanded (each node counted once, with the
    sizes of the nodes it refers to), and refuse it past MAX_YAML_VALUES before anything walks it."""
    sizes: dict[int, int] = {}

    def size(node) -> int:
        if id(node) not in sizes:
            children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else \
                node.value if isinstance(node, yaml.SequenceNode) else []
            sizes[id(node)] = 1 + sum(size(child) for child in children)
            if sizes[id(node)] > MAX_YAML_VALUES:
                raise yaml.MarkedYAMLError(problem=f"its aliases expand to more than {MAX_YAML_VALUES:,} values "
                                           "(an alias bomb?)", problem_mark=node.start_mark)
        return sizes[id(node)]

    if root is not None:
        size(root)


def _clean_loc(loc: tuple) -> tuple:
    # pydantic puts the discriminator's tag in the path ("annotators.0.llm.model"); drop it.
    tags = {"llm", "local", "model", "recorded"}
    return tuple(p for i, p in enumerate(loc) if not (p in tags and i > 0 and isinstance(loc[i - 1], int)))


def _line_index(node, path: tuple = ()) -> dict[tuple, int]:
    """Map each path in a YAML document to its 1-based line number."""
    index: dict[tuple, int] = {}
    if node is None:
        return index
    index[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            index[path + (key.value,)] = key.start_mark.line + 1
            index.update({k: v for k, v in _line_index(value, path + (key.value,)).items() if k != path + (key.value,)})
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            index.update(_line_index(value, path + (i,)))
    return index


def _nearest_line(lines: dict[tuple, int], loc: tuple) -> int | None:
    # A missing key has no line: point at its parent.
    for end in range(len(loc), -1, -1):
        key = tuple(str(p) if not isinstance(p, int) else p for p in loc[:end])
        if key in lines:
            return lines[key]
    return None


def dump_project_file(config: ProjectConfig) -> str:
    data = config.model_dump(mode="json", exclude_defaults=False)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
