"""Server-rendered pages: login, the review screen, the managers' overview."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from markdown_it import MarkdownIt

from evals.project_metrics import project_metrics
from evals.scorecards import (
    annotator_scorecards,
    dont_know_summary,
    recent_disagreements,
    reviewer_scorecards,
)
from evals.trends import trend_figures, trends
from labeler.store import audit
from labeler.store.users import Member, authenticate, change_user
from labeler.store.workspace import Workspace
from review_ui import qualification
from review_ui.auth import (
    MANAGERS,
    REVIEWERS,
    allow,
    check_csrf,
    csrf_token,
    current_user,
    member_or_none,
    workspace,
)
from review_ui.queue import EXPERTS

router = APIRouter(tags=["pages"])
templates = Jinja2Templates(directory=Path(__file__).resolve().parents[1] / "templates")  # autoescapes
templates.env.globals.update(REVIEWERS=REVIEWERS, MANAGERS=MANAGERS)  # the links follow the routes' rules
_markdown = MarkdownIt("commonmark", {"html": False})  # raw HTML in the guideline is shown as text


def _home(user: Member) -> str:
    """Managers and admins land on the overview (opening it leases nothing); reviewers and experts on the queue."""
    return "/manage" if user.role in MANAGERS else "/review"


def _safe_next(target: str | None) -> str | None:
    # Only paths on this site: "//host" and "https://host" would send a fresh login elsewhere.
    return target if target and target.startswith("/") and not target.startswith("//") else None


@router.get("/", include_in_schema=False)
def root(user: Member = Depends(current_user)) -> RedirectResponse:
    return RedirectResponse(_home(user), status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str | None = None, ws: Workspace = Depends(workspace)):
    return templates.TemplateResponse(request, "login.html", {"csrf": csrf_token(request), "next": _safe_next(next),
                                                              "project": ws.config.name, "error": None})


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, name: str = Form(...), password: str = Form(...), csrf_token_field: str = Form("", alias="csrf_token"),
          next: str | None = Form(None), ws: Workspace = Depends(workspace)):
    check_csrf(request, csrf_token_field)
    throttle, client = request.app.state.throttle, request.client.host if request.client else "?"
    wait = throttle.wait(name, client)
    if wait:  # too many failures: refused without looking at the password
        return _login_error(request, ws, next, f"Too many failed logins; try again in {(wait + 59) // 60} min.",
                            429, {"Retry-After": str(wait)})
    user = authenticate(ws, name, password)
    if user is None:
        throttle.failed(name, client)
        return _login_error(request, ws, next, "Wrong name or password, or no role in this project.", 401)
    request.session.clear()  # a new session on login: no fixation of a pre-login cookie
    request.session.update(user_id=user.id, generation=user.generation)
    csrf_token(request)
    return RedirectResponse(_safe_next(next) or _home(user), status_code=303)


def _login_error(request: Request, ws: Workspace, next: str | None, error: str, status: int, headers=None):
    return templates.TemplateResponse(request, "login.html", {
        "csrf": csrf_token(request), "next": _safe_next(next), "project": ws.config.name, "error": error},
        status_code=status, headers=headers)


@router.post("/logout")
def logout(request: Request, csrf_token_field: str = Form("", alias="csrf_token"),
           ws: Workspace = Depends(workspace)) -> RedirectResponse:
    check_csrf(request, csrf_token_field)  # a form post: the token comes in the form, not a header
    user = member_or_none(request, ws)
    if user is not None:  # ends this session and any copy of its cookie, on every server
        change_user(ws, user.name, "logout", by=user.id)
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


@router.get("/review", response_class=HTMLResponse)
def review_page(request: Request, ws: Workspace = Depends(workspace), user: Member = Depends(allow(*REVIEWERS))):
    guideline = ws.project.guidelines_text()
    return templates.TemplateResponse(request, "review.html", {
        "user": user, "expert": user.role in EXPERTS, "csrf": csrf_token(request), "project": ws.config.name,
        "labels": ws.config.labels, "task": ws.config.task, "fields": ws.config.fields, "reasons": ws.config.routing.review_dont_know_reasons,
        "display": ws.config.display_name, "guideline": _markdown.render(guideline),
        "guideline_defines_labels": _defines_labels(guideline, ws.config.label_names)})


def _defines_labels(guideline: str, labels: list[str]) -> bool:
    """Whether the guideline has a heading per label (`### label`): then its definitions are not shown twice."""
    headings = {line.lstrip("#").strip() for line in guideline.splitlines() if line.startswith("#")}
    return all(label in headings for label in labels)


@router.get("/manage", response_class=HTMLResponse)
def manage_page(request: Request, ws: Workspace = Depends(workspace), user: Member = Depends(allow(*MANAGERS))):
    return templates.TemplateResponse(request, "manage.html", {
        "user": user, "csrf": csrf_token(request), "project": ws.config.name, "metrics": project_metrics(ws),
        "annotators": annotator_scorecards(ws), "reviewers": reviewer_scorecards(ws),
        "qualifications": qualification.attempts(ws), "dont_know": dont_know_summary(ws),
        "disagreements": recent_disagreements(ws), "events": audit.events(ws, limit=30),
        "figures": trend_figures(trends(ws))})
