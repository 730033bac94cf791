"""The review queue over HTTP: lease the next item, submit (the answer carries the next item), skip, undo."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from labeler.store.users import Member
from labeler.store.workspace import Workspace
from review_ui import answers, qualification, queue
from review_ui.auth import REVIEWERS, allow, workspace
from review_ui.cards import card
from review_ui.schemas import Next, Skip, Submission, Submitted

router = APIRouter(prefix="/api/queue", tags=["queue"])
reviewer = allow(*REVIEWERS)


def _next(ws: Workspace, user: Member, lease: queue.Lease | None = None, leased: bool = False) -> Next:
    """The card of `lease` (when `leased`: else of the next lease); when there is none, why, if there is more
    to say than an empty queue."""
    item = card(ws, lease if leased else queue.lease_next(ws, user), user)
    return Next(item=item, message=None if item else queue.waiting(ws, user), progress=queue.progress(ws, user))


@router.get("/next", response_model=Next)
def next_item(ws: Workspace = Depends(workspace), user: Member = Depends(reviewer)) -> Next:
    """The reviewer's current lease, or a new one; asking again returns the same item."""
    return _next(ws, user)


@router.post("/submit", response_model=Submitted)
def submit(body: Submission, ws: Workspace = Depends(workspace), user: Member = Depends(reviewer)) -> Submitted:
    spans = [span.model_dump() for span in body.spans] if body.spans is not None else None
    label = answers.answer_of(ws, body.label, body.labels, spans, body.item_id)
    result, lease = answers.submit_and_lease(ws, user, body.item_id, label=label, reason=body.reason,
                                             client_id=body.client_id)
    # The state is not returned: on a hidden gold item it would give the item away.
    following = _next(ws, user, lease, leased=True)
    return Submitted(status=result["status"], item=following.item, message=following.message, progress=following.progress)


@router.post("/skip", response_model=Next)
def skip(body: Skip, ws: Workspace = Depends(workspace), user: Member = Depends(reviewer)) -> Next:
    answers.skip(ws, user, body.item_id)
    return _next(ws, user)


@router.get("/qualification")
def my_qualification(ws: Workspace = Depends(workspace), user: Member = Depends(reviewer)) -> dict:
    """The reviewer's qualification attempts, and the mistakes of the last finished one with the guideline's
    section for the right label."""
    history = qualification.attempts(ws, user.id)
    finished = next((a for a in history if a["finished_at"]), None)
    return {"attempts": history, "mistakes": qualification.mistakes(ws, finished["attempt"]) if finished else []}


@router.post("/undo", response_model=Next)
def undo(ws: Workspace = Depends(workspace), user: Member = Depends(reviewer)) -> Next:
    """Take back the newest answer: its item comes back to this reviewer, the current one returns to the queue."""
    return Next(item=card(ws, answers.undo(ws, user), user))
