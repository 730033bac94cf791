"""Users. Admins list this project's, give a user a role here (a new user with a password, or a token shown
once) or take it away. Credentials (disable, enable, password, token, every session) hold in every project
of a user's, so they are changed by the user themselves or by an admin of every one of those projects
(`labeler.store.users.may_change_credentials`). Each change is audited."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, HTTPException
from sqlalchemy import select

from labeler.store import models
from labeler.store.users import Member, add_user, change_user, remove_member
from labeler.store.workspace import Workspace
from review_ui.auth import ADMINS, allow, current_user, workspace
from review_ui.schemas import CreatedUser, NewPassword, NewUser

router = APIRouter(prefix="/api/users", tags=["users"])
admin = allow(*ADMINS)


@router.get("")
def users(ws: Workspace = Depends(workspace), _: Member = Depends(admin)) -> list[dict]:
    User, Membership = models.User, models.Membership
    with ws.session() as s:
        found = s.execute(select(User.name, Membership.role, User.created_at, User.disabled)
                          .join(Membership, Membership.user_id == User.id)
                          .where(Membership.project_id == ws.project_id).order_by(User.name))
        return [{"name": name, "role": role.value, "created_at": at.isoformat(), "disabled": disabled}
                for name, role, at, disabled in found]


@router.post("", status_code=201, response_model=CreatedUser)
def create(body: NewUser, ws: Workspace = Depends(workspace), user: Member = Depends(admin)) -> CreatedUser:
    token = add_user(ws, body.name, body.role, password=body.password, with_token=body.token, by=user.id)
    return CreatedUser(name=body.name, role=body.role, token=token)


@router.delete("/{name}", status_code=204)
def remove(name: str, ws: Workspace = Depends(workspace), user: Member = Depends(admin)) -> None:
    """Take the user's role in this project away; their login and other projects stay."""
    remove_member(ws, name, by=user.id)


def _admin_or_self(name: str, user: Member = Depends(current_user)) -> Member:
    if user.role not in ADMINS and name != user.name:
        raise HTTPException(403, f"the {user.role.value} role may change only its own credentials")
    return user


@router.post("/{name}/password", status_code=204)
def password(name: str, body: NewPassword, ws: Workspace = Depends(workspace),
             user: Member = Depends(_admin_or_self)) -> None:
    change_user(ws, name, "passwd", password=body.password, by=user.id, current_password=body.current_password)


@router.post("/{name}/{action}", status_code=204)
def change(name: str, action: Literal["disable", "enable", "revoke-token", "logout"], ws: Workspace = Depends(workspace),
           user: Member = Depends(_admin_or_self)) -> None:
    """Disable or enable a user, revoke their API token, or end every session of theirs."""
    change_user(ws, name, action, by=user.id)
