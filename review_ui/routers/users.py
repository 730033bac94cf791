"""Users, for admins: list them, add one (with a password, or a token shown once)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from sqlalchemy import select

from labeler import models
from labeler.users import add_user
from labeler.workspace import Workspace
from review_ui.auth import ADMINS, allow, workspace
from review_ui.schemas import CreatedUser, NewUser

router = APIRouter(prefix="/api/users", tags=["users"])
admin = allow(*ADMINS)


@router.get("")
def users(ws: Workspace = Depends(workspace), _: models.User = Depends(admin)) -> list[dict]:
    with ws.session() as s:
        found = s.execute(select(models.User.name, models.User.role, models.User.created_at).order_by(models.User.name))
        return [{"name": name, "role": role.value, "created_at": at.isoformat()} for name, role, at in found]


@router.post("", status_code=201, response_model=CreatedUser)
def create(body: NewUser, ws: Workspace = Depends(workspace), user: models.User = Depends(admin)) -> CreatedUser:
    token = add_user(ws.engine, body.name, body.role, password=body.password, with_token=body.token, by=user.id)
    return CreatedUser(name=body.name, role=body.role, token=token)
