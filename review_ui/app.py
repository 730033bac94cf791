"""The review app: routers per concern, signed session cookies, static files bundled in the package."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import HTTPException
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import OperationalError
from starlette.middleware.sessions import SessionMiddleware

from labeler.errors import Forbidden, LabelerError
from labeler.store.engine import is_busy
from labeler.store.workspace import Workspace
from review_ui.guard import BodyGuard
from review_ui.queue import Conflict
from review_ui.routers import items, metrics, pages, queue, users
from review_ui.throttle import LoginThrottle

SECRET_ENV = "LABELER_SESSION_SECRET"
SESSION_HOURS = 12
SESSION_COOKIE = "labeler_session"
MAX_BODY = 1024 * 1024  # bytes: an item's answer is a few hundred
RETRY_AFTER = 2  # seconds a client is asked to wait when the store is busy


def create_app(ws: Workspace, *, secure_cookies: bool = True, session_secret: str | None = None,
               max_body: int = MAX_BODY) -> FastAPI:
    """`secure_cookies`: send the session cookie over HTTPS only (off only for plain HTTP on loopback).

    The cookie-signing secret comes from $LABELER_SESSION_SECRET (give every server process the same
    one); otherwise a random one per start, which logs everyone out on restart. It is never stored."""
    app = FastAPI(title=f"labeler review: {ws.config.name}", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.workspace = ws
    app.state.throttle = LoginThrottle()
    app.add_middleware(SessionMiddleware, secret_key=session_secret or os.environ.get(SECRET_ENV) or secrets.token_urlsafe(32),
                       session_cookie=SESSION_COOKIE, max_age=SESSION_HOURS * 3600, same_site="lax",
                       https_only=secure_cookies)
    app.add_middleware(BodyGuard, max_body=max_body, session_cookie=SESSION_COOKIE)  # outermost: before any body is read
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    for module in (pages, queue, items, users, metrics):
        app.include_router(module.router)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict:
        return {"ok": True}

    @app.exception_handler(HTTPException)
    async def refused(request: Request, exc: HTTPException):
        page = not request.url.path.startswith("/api/")
        if exc.status_code == 401 and page:
            return RedirectResponse(f"/login?next={request.url.path}", status_code=303)  # pages send people to log in
        if exc.status_code == 403 and page and request.method == "GET":  # a page, not JSON, with a way back
            return pages.templates.TemplateResponse(request, "forbidden.html", {
                "detail": str(exc.detail).capitalize(), "back": "/", "project": ws.config.name}, status_code=403)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(OperationalError)
    async def busy(request: Request, exc: OperationalError):
        if not is_busy(exc):
            raise exc
        # A long import holding SQLite's lock, a restarting server: come back in a moment, nothing was lost.
        headers = {"Retry-After": str(RETRY_AFTER)}
        if not request.url.path.startswith("/api/"):  # people get a page, programs JSON
            return pages.templates.TemplateResponse(request, "busy.html", {
                "project": ws.config.name, "retry_after": RETRY_AFTER}, status_code=503, headers=headers)
        return JSONResponse({"detail": "the store is busy; try again in a moment"}, status_code=503, headers=headers)

    @app.exception_handler(LabelerError)
    async def bad_request(request: Request, exc: LabelerError):
        status = 409 if isinstance(exc, Conflict) else 403 if isinstance(exc, Forbidden) else 422
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Content-Security-Policy",
                                    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'")
        return response

    return app
