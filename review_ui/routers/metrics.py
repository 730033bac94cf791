"""Figures for managers: progress, annotators, reviewers, disagreements, the audit log."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from evals.project_metrics import project_metrics
from evals.scorecards import (
    annotator_scorecards,
    dont_know_summary,
    recent_disagreements,
    reviewer_scorecards,
)
from labeler.store import audit
from labeler.store.users import Member
from labeler.store.workspace import Workspace
from review_ui import qualification
from review_ui.auth import MANAGERS, allow, workspace

router = APIRouter(prefix="/api", tags=["metrics"])
manager = allow(*MANAGERS)


@router.get("/metrics")
def metrics(ws: Workspace = Depends(workspace), _: Member = Depends(manager)) -> dict:
    return project_metrics(ws)


@router.get("/scorecards")
def scorecards(ws: Workspace = Depends(workspace), _: Member = Depends(manager)) -> dict:
    return {"annotators": annotator_scorecards(ws), "reviewers": reviewer_scorecards(ws),
            "disagreements": recent_disagreements(ws), "qualifications": qualification.attempts(ws),
            "dont_know": dont_know_summary(ws)}


@router.get("/audit")
def audit_log(limit: int = 100, ws: Workspace = Depends(workspace), _: Member = Depends(manager)) -> list[dict]:
    return audit.events(ws, limit=min(max(limit, 1), 1000))
