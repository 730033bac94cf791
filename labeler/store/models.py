"""The store's tables. Schema changes go through Alembic (labeler/migrations)."""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Any

from sqlalchemy import JSON, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Split(str, Enum):
    """What a gold label is used for."""

    calibration = "calibration"  # fits confidence calibration and thresholds, and evals
    honeypot = "honeypot"  # hidden checks mixed into runs and review queues
    examples = "examples"  # few-shot examples shown to annotators


class State(str, Enum):
    """The state of an item's current decision."""

    auto = "auto"  # accepted automatically: calibrated confidence cleared the threshold
    needs_review = "needs_review"
    confirmed = "confirmed"  # a reviewer settled it
    escalated = "escalated"  # waiting for an expert
    gold = "gold"  # the label is an expert's gold label


class Role(str, Enum):
    admin = "admin"
    manager = "manager"
    reviewer = "reviewer"
    expert = "expert"


class Project(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True)
    labels: list[str] = Field(sa_column=Column(JSON, nullable=False))
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class Item(SQLModel, table=True):
    # Its index serves lookups by project_id alone too (leading column): no second index to write.
    __table_args__ = (UniqueConstraint("project_id", "external_id"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id")
    external_id: str
    fields: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    content_hash: str  # of the fields; a re-import with other content is a conflict
    created_at: datetime = Field(default_factory=utcnow)


class GoldLabel(SQLModel, table=True):
    item_id: int = Field(foreign_key="item.id", primary_key=True)
    label: str
    split: Split = Field(default=Split.calibration, index=True)
    created_at: datetime = Field(default_factory=utcnow)


class Annotator(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    name: str
    kind: str  # llm, local, model, recorded, human
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class PromptVersion(SQLModel, table=True):
    """Immutable: identified by the hash of everything that shapes a model's input."""

    __table_args__ = (UniqueConstraint("project_id", "content_hash"), UniqueConstraint("project_id", "name"))

    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    name: str  # readable: v1, v2, ...
    content_hash: str
    spec: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class Vote(SQLModel, table=True):
    """Append-only. One per (item, annotator, version): a rerun never pays twice."""

    __table_args__ = (
        UniqueConstraint("item_id", "annotator_id", "version"),
        Index("ix_vote_annotator_item", "annotator_id", "item_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    item_id: int = Field(foreign_key="item.id", index=True)
    annotator_id: int = Field(foreign_key="annotator.id")
    # The prompt version's content hash for LLMs, the training fingerprint for models, "" otherwise.
    version: str = ""
    run_id: int | None = Field(default=None, foreign_key="run.id", index=True)
    label: str | None = None  # None: an abstention
    abstain_reason: str | None = None
    probs: dict[str, float] | None = Field(default=None, sa_column=Column(JSON))
    raw: str | None = None
    cost: float = 0.0
    latency_ms: float | None = None
    created_at: datetime = Field(default_factory=utcnow)


class Decision(SQLModel, table=True):
    """The current label of an item and how it was reached."""

    # The review queue reads a project's open items level by level of review_count, in item order, from
    # this index alone (and a project's gold from its `gold` range): no row of another project is read.
    __table_args__ = (Index("ix_decision_queue", "project_id", "state", "review_count", "item_id"),)

    item_id: int = Field(foreign_key="item.id", primary_key=True)
    project_id: int = Field(foreign_key="project.id")  # the item's, kept here for the queue's index
    label: str | None = None
    confidence: float | None = None
    state: State = Field(index=True)
    method: str = ""  # e.g. "majority", "dawid_skene+isotonic", "review"
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow)
    # How many review tasks (leases and answers, not skips) the item has: kept by the review queue
    # with each task written or removed, so finding an open item needs no count over all tasks.
    review_count: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class User(SQLModel, table=True):
    """Someone who may log in; what they may do is their role in each project (Membership)."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True)
    password_hash: str | None = None
    token_hash: str | None = Field(default=None, index=True)
    created_at: datetime = Field(default_factory=utcnow)
    disabled: bool = Field(default=False, sa_column_kwargs={"server_default": "0"})
    # Every session carries the generation it was made in; bumping it (logout, disable, new
    # password) ends every session of this user at once, on every server.
    session_generation: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class Membership(SQLModel, table=True):
    """A user's role in one project: users and their work are scoped to projects sharing a store."""

    user_id: int = Field(foreign_key="user.id", primary_key=True)
    project_id: int = Field(foreign_key="project.id", primary_key=True, index=True)
    role: Role


class ReviewTask(SQLModel, table=True):
    """A reviewer's lease on an item; submitted leases carry the reviewer's answer."""

    # A client id names one submission of one user on one item: a retry counts once, and ids made for
    # other items (or other projects sharing the store) never collide with it.
    __table_args__ = (UniqueConstraint("user_id", "item_id", "client_id", name="uq_reviewtask_client"),
                      Index("ix_reviewtask_open", "submitted_at", "expires_at"))  # finds expired leases

    id: int | None = Field(default=None, primary_key=True)
    item_id: int = Field(foreign_key="item.id", index=True)
    user_id: int = Field(foreign_key="user.id", index=True)
    leased_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    submitted_at: datetime | None = None
    skipped_at: datetime | None = None  # the reviewer gave it back; it stays out of their queue
    client_id: str | None = None  # made by the client so a retried submit counts once
    label: str | None = None
    reason: str | None = None  # for "I don't know"
    blind: bool = Field(default=False, sa_column_kwargs={"server_default": "0"})  # shown with no machine view
    suggested: str | None = None  # the machines' suggestion as shown (None: blind, or none)
    qualification_id: int | None = Field(default=None, foreign_key="qualification.id")


class Qualification(SQLModel, table=True):
    """One attempt of a reviewer at a project's qualification set (also a re-qualification after a pause)."""

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="user.id", index=True)
    project_id: int = Field(foreign_key="project.id")
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    items: int  # answers it takes
    right: int | None = None
    passed: bool | None = None
    reason: str = "new reviewer"  # why this attempt: a new reviewer, a retry, a pause


class Run(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True)
    kind: str  # import, run, eval, calibrate, ...
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    stats: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class ResponseCache(SQLModel, table=True):
    """LLM responses by (model, prompt version, item content, parameters): never pay twice."""

    key: str = Field(primary_key=True)
    response: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class ProviderBatch(SQLModel, table=True):
    """Questions sent to a provider's batch API, stored the moment the provider takes them: a run killed
    before they come back collects them instead of asking (and paying) again."""

    id: int | None = Field(default=None, primary_key=True)
    annotator_id: int = Field(foreign_key="annotator.id", index=True)
    version: str
    batch_id: str  # the provider's
    requests: dict[str, int] = Field(sa_column=Column(JSON, nullable=False))  # response cache key -> item id
    status: str = "submitted"  # submitted until collected; then the provider's last status
    created_at: datetime = Field(default_factory=utcnow)
    collected_at: datetime | None = None
    counts: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class AuditEvent(SQLModel, table=True):
    """Who changed what, when: appended by every human write (review answers, undo, gold, users)."""

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    user_id: int | None = Field(default=None, foreign_key="user.id", index=True)
    action: str  # review.submit, review.undo, gold.add, user.add, ...
    project_id: int | None = Field(default=None, foreign_key="project.id", index=True)  # None: written before 0009
    item_id: int | None = Field(default=None, foreign_key="item.id", index=True)
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
