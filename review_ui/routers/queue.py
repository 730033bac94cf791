"""The review queue over HTTP: lease the next item, submit (the answer carries the next item), skip, undo."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from labeler import models
from labeler.workspace import Workspace
from review_ui import queue
from review_ui.auth import REVIEWERS, allow, workspace
from review_ui.cards import card
from review_ui.schemas import Next, Skip, Submission, Submitted

router = APIRouter(prefix="/api/queue", tags=["queue"])
reviewer = allow(*REVIEWERS)


@router.get("/next", response_model=Next)
def next_item(ws: Workspace = Depends(workspace), user: models.User = Depends(reviewer)) -> Next:
    """The reviewer's current lease, or a new one; asking again returns the same item."""
    return Next(item=card(ws, queue.lease_next(ws, user), user))


@router.post("/submit", response_model=Submitted)
def submit(body: Submission, ws: Workspace = Depends(workspace), user: models.User = Depends(reviewer)) -> Submitted:
    result = queue.submit(ws, user, body.item_id, label=body.label, reason=body.reason, client_id=body.client_id)
    # The state is not returned: on a hidden gold item it would give the item away.
    return Submitted(status=result["status"], item=card(ws, queue.lease_next(ws, user), user))


@router.post("/skip", response_model=Next)
def skip(body: Skip, ws: Workspace = Depends(workspace), user: models.User = Depends(reviewer)) -> Next:
    queue.skip(ws, user, body.item_id)
    return Next(item=card(ws, queue.lease_next(ws, user), user))


@router.post("/undo", response_model=Next)
def undo(ws: Workspace = Depends(workspace), user: models.User = Depends(reviewer)) -> Next:
    """Take back the newest answer: its item comes back to this reviewer, the current one returns to the queue."""
    return Next(item=card(ws, queue.undo(ws, user), user))
