"""The API's request and response bodies (apart from the tables, as FastAPI's tutorial lays out)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from labeler.store.models import Role

# A store row id: a 64-bit signed integer. A larger one is a bad request (422), not a server error.
RowId = Annotated[int, Field(ge=1, le=2**63 - 1)]


class SpanIn(BaseModel):
    start: int = Field(ge=0)
    end: int = Field(ge=1)
    label: str = Field(max_length=200)


class MachineVote(BaseModel):
    annotator: str
    label: str | list[str] | list[dict] | None  # None: it abstained; a label set's labels as a list; spans
    probability: float | None  # its probability for the label it gave, when it reports one (not for sets)
    version: str


class Card(BaseModel):
    """One item on the review screen."""

    task_id: int
    item_id: int
    external_id: str
    fields: dict[str, Any]
    task: str = "single_label"  # labeler.tasks: a label, a set of labels (multi_label), or spans
    # the machines' best guess, preselected on the screen (None on blind items); spans: {start, end, label, text}
    suggestion: str | list[str] | list[dict] | None
    label_confidence: dict[str, float] | None = None  # P(each label applies), or of each span ("start:end:label")
    confidence: float | None  # its calibrated confidence
    preselect: bool = False  # the suggestion is chosen at first: its confidence is at least review_preselect_min
    votes: list[MachineVote]
    reason: str | None = None  # in one line, why this item came to people
    blind: bool = False  # the machines' view is hidden on this item
    qualification: dict | None = None  # {answered, of} while qualifying
    answers: list[dict] = []  # reviewers' answers so far: shown to experts only
    expires_at: str


class Next(BaseModel):
    item: Card | None  # None: nothing left to review
    message: str | None = None  # why there is no item, when there is a reason other than an empty queue
    progress: dict | None = None  # {answered: by this reviewer, waiting: items waiting for people (null until counted)}


class Submission(BaseModel):
    item_id: RowId
    label: str | None = None  # None with a reason: "I don't know"
    labels: list[Annotated[str, Field(max_length=200)]] | None = Field(default=None, max_length=100)  # a label set
    spans: list[SpanIn] | None = Field(default=None, max_length=1000)  # spans (task: spans)
    reason: str | None = Field(default=None, max_length=500)
    client_id: str = Field(min_length=1, max_length=100)  # made by the client: a retried submit counts once


class Submitted(BaseModel):
    status: Literal["recorded", "duplicate"]
    item: Card | None  # the next item, so saving and moving on is one round trip
    message: str | None = None
    progress: dict | None = None


class Skip(BaseModel):
    item_id: RowId


class GoldMark(BaseModel):
    label: str
    split: Literal["calibration", "honeypot", "examples"] = "calibration"


class NewUser(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    role: Role
    password: str | None = Field(default=None, max_length=1000)
    token: bool = False


class NewPassword(BaseModel):
    password: str = Field(min_length=1, max_length=1000)
    current_password: str | None = Field(default=None, max_length=1000)  # needed to change one's own


class CreatedUser(BaseModel):
    name: str
    role: Role
    token: str | None  # shown once
