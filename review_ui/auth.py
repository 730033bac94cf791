"""Who is asking: a session cookie (pages, with a CSRF token on every write) or an API token (programs).

Dependencies for routes: `current_user`, and `allow(*roles)` which also refuses roles too low (403)."""

from __future__ import annotations

import hmac
import secrets

from fastapi import Depends, HTTPException, Request

from labeler.store.models import Role
from labeler.store.users import Member, member, user_for_token
from labeler.store.workspace import Workspace

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
CSRF_HEADER = "X-CSRF-Token"

# Who may do what. Roles are not a ladder: a manager watches progress but does not settle items.
# Experts (who settle items) are the queue's rule: review_ui.queue.EXPERTS.
REVIEWERS = (Role.reviewer, Role.expert, Role.admin)
MANAGERS = (Role.manager, Role.admin)
ADMINS = (Role.admin,)


def workspace(request: Request) -> Workspace:
    return request.app.state.workspace


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use (also before login: the login form carries one)."""
    if "csrf" not in request.session:
        request.session["csrf"] = secrets.token_urlsafe(32)
    return request.session["csrf"]


def check_csrf(request: Request, supplied: str | None) -> None:
    expected = request.session.get("csrf")
    if not expected or not supplied or not hmac.compare_digest(expected, supplied):
        raise HTTPException(403, "missing or wrong CSRF token")


def current_user(request: Request, ws: Workspace = Depends(workspace)) -> Member:
    """The member of this project making the request. A disabled user, a revoked token, a session ended
    since (logout, new password, disable: the user's session generation moved on) or a user with no
    role in this project is nobody here."""
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        user = user_for_token(ws, header[7:].strip())
        if user is None:
            raise HTTPException(401, "invalid API token", headers={"WWW-Authenticate": "Bearer"})
        return user  # no cookie involved, so no cross-site forgery to guard against
    user_id = request.session.get("user_id")
    user = member(ws, user_id, request.session.get("generation")) if user_id is not None else None
    if user is None:
        request.session.pop("user_id", None)
        raise HTTPException(401, "log in first", headers={"WWW-Authenticate": "Bearer"})
    if request.method not in SAFE_METHODS:
        check_csrf(request, request.headers.get(CSRF_HEADER))
    return user


def member_or_none(request: Request, ws: Workspace) -> Member | None:
    """The session's member, if the session is still good (no error when it is not)."""
    user_id = request.session.get("user_id")
    return member(ws, user_id, request.session.get("generation")) if user_id is not None else None


def allow(*roles: Role):
    """A dependency giving the current user when their role is one of `roles`, else 403."""

    def dependency(user: Member = Depends(current_user)) -> Member:
        if user.role not in roles:
            raise HTTPException(403, f"the {user.role.value} role may not do this")
        return user

    return dependency
