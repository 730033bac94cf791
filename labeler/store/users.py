"""Users and their credentials: passwords as slow salted hashes (scrypt), API tokens as digests.

Nothing that could log someone in is stored in the clear: a token is shown once, when made."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import bindparam, select

from labeler.errors import Forbidden, LabelerError
from labeler.store import audit, models
from labeler.store.workspace import Workspace

# scrypt cost: about 50 ms and 16 MB per check here, slow enough to make guessing expensive.
SCRYPT = {"n": 2**14, "r": 8, "p": 1, "maxmem": 64 * 1024 * 1024}
MIN_PASSWORD = 8


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **SCRYPT)
    return f"scrypt${SCRYPT['n']}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str | None) -> bool:
    if not stored or not stored.startswith("scrypt$"):
        return False
    _, n, salt, digest = stored.split("$")
    params = dict(SCRYPT, n=int(n))
    candidate = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), dklen=32, **params)
    return hmac.compare_digest(candidate.hex(), digest)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Member:
    """A user as one project sees them: their role there, and the session generation in force."""

    id: int
    name: str
    role: models.Role
    generation: int


# Unknown names are checked against this, so they cost the same scrypt work as known ones (no timing tell).
_DECOY_HASH = hash_password(secrets.token_urlsafe(16))


def add_user(ws: Workspace, name: str, role: models.Role, password: str | None = None, with_token: bool = False,
             by: int | None = None) -> str | None:
    """Create a user with a role in this project, or give an existing user (of another project sharing
    the store) a role here; return the API token when one was asked for (only its digest is stored).

    `by`: the admin who did it, for the audit log (None: from the command line)."""
    if not name.strip():
        raise LabelerError("a user needs a name")
    if password is not None and len(password) < MIN_PASSWORD:
        raise LabelerError(f"passwords need at least {MIN_PASSWORD} characters")
    token = secrets.token_urlsafe(32) if with_token else None
    with ws.session() as s:
        user = s.scalars(select(models.User).where(models.User.name == name)).first()
        if user is not None:
            if s.get(models.Membership, (user.id, ws.project_id)):
                raise LabelerError(f"user {name!r} exists in this project")
            if password is not None or with_token:
                raise LabelerError(f"user {name!r} exists (in another project): give them a role here without a "
                                   "password or token; theirs stay (`labeler user passwd` changes it)")
        else:
            if password is None and not with_token:
                raise LabelerError("give a password or ask for a token")
            user = models.User(name=name, password_hash=hash_password(password) if password else None,
                               token_hash=token_digest(token) if token else None)
            s.add(user)
            s.flush()
        s.add(models.Membership(user_id=user.id, project_id=ws.project_id, role=role))
        audit.record(s, "user.add", user_id=by, project_id=ws.project_id, name=name, role=role.value, new_user=user.id, project=ws.config.name)
    return token


def exists(ws: Workspace, name: str) -> bool:
    with ws.session() as s:
        return s.scalars(select(models.User.id).where(models.User.name == name)).first() is not None


def _member(session, ws: Workspace, user: models.User | None) -> Member | None:
    if user is None or user.disabled:
        return None
    membership = session.get(models.Membership, (user.id, ws.project_id))
    return Member(user.id, user.name, membership.role, user.session_generation) if membership else None


def authenticate(ws: Workspace, name: str, password: str) -> Member | None:
    """The member with this name and password, if they may work in this project. The same scrypt work is
    spent whether the name exists or not."""
    with ws.session() as s:
        user = s.scalars(select(models.User).where(models.User.name == name)).first()
        right = verify_password(password, user.password_hash if user and user.password_hash else _DECOY_HASH)
        return _member(s, ws, user) if user is not None and right else None


# An enabled user with their role in a project: one read, built once (it runs on every request).
_MEMBER = (select(models.User.id, models.User.name, models.Membership.role, models.User.session_generation)
           .join(models.Membership, (models.Membership.user_id == models.User.id)
                 & (models.Membership.project_id == bindparam("project")))
           .where(models.User.disabled.is_(False)))
_BY_TOKEN = _MEMBER.where(models.User.token_hash == bindparam("digest"))
_BY_ID = _MEMBER.where(models.User.id == bindparam("user"))


def _member_by(ws: Workspace, query, **params) -> Member | None:
    with ws.engine.connect() as c:
        row = c.execute(query, {"project": ws.project_id, **params}).first()
    return Member(*row) if row else None


def user_for_token(ws: Workspace, token: str) -> Member | None:
    return _member_by(ws, _BY_TOKEN, digest=token_digest(token))


def member(ws: Workspace, user_id: int, generation: int | None) -> Member | None:
    """The member behind a session, unless the session's generation has been ended since."""
    found = _member_by(ws, _BY_ID, user=user_id)
    return found if found is not None and found.generation == generation else None


CREDENTIAL_ACTIONS = ("disable", "enable", "passwd", "revoke-token", "new-token", "logout")


def may_change_credentials(session, by: int | None, user: models.User) -> bool:
    """A user's credentials hold in every project they belong to, so only the user, an admin of every one of
    those projects, or the command line on the store (`by` None) may change them."""
    if by is None or by == user.id:
        return True
    theirs = set(session.scalars(select(models.Membership.project_id).where(models.Membership.user_id == user.id)))
    admin_of = set(session.scalars(select(models.Membership.project_id).where(
        models.Membership.user_id == by, models.Membership.role == models.Role.admin)))
    return theirs <= admin_of


def change_user(ws: Workspace, name: str, action: str, *, password: str | None = None, by: int | None = None,
                current_password: str | None = None) -> str | None:
    """disable, enable, passwd (a new password), revoke-token, new-token, logout (end every session). Every one
    of them ends the user's sessions on every server; each is written to the audit log. Returns a new token
    when `action` is "new-token". `by` (None: the command line) must be allowed by `may_change_credentials`;
    users changing their own password give their current one."""
    if action not in CREDENTIAL_ACTIONS:
        raise LabelerError(f"unknown user action {action!r}")
    if action == "passwd" and (password is None or len(password) < MIN_PASSWORD):
        raise LabelerError(f"passwords need at least {MIN_PASSWORD} characters")
    token = secrets.token_urlsafe(32) if action == "new-token" else None
    with ws.session() as s:
        user = s.scalars(select(models.User).where(models.User.name == name)).first()
        if user is None or s.get(models.Membership, (user.id, ws.project_id)) is None:
            raise LabelerError(f"no user {name!r} in this project")
        if not may_change_credentials(s, by, user):
            raise Forbidden(f"{name!r} also works in projects you are not an admin of: only they, an admin "
                                  "of every one of their projects or `labeler user` on the store may change this; "
                                  "`DELETE /api/users/NAME` takes their role here away")
        if action == "passwd" and by == user.id and not verify_password(current_password or "", user.password_hash):
            raise Forbidden("give your current password to set a new one")
        if action == "disable":
            user.disabled = True
        elif action == "enable":
            user.disabled = False
        elif action == "passwd":
            user.password_hash = hash_password(password)
        elif action == "revoke-token":
            user.token_hash = None
        elif action == "new-token":
            user.token_hash = token_digest(token)
        user.session_generation += 1
        audit.record(s, f"user.{action}", user_id=by, project_id=ws.project_id, name=name, changed_user=user.id)
    return token


def remove_member(ws: Workspace, name: str, *, by: int | None = None) -> None:
    """Take a user's role in this project away (their login and their other projects' roles stay)."""
    with ws.session() as s:
        user = s.scalars(select(models.User).where(models.User.name == name)).first()
        membership = s.get(models.Membership, (user.id, ws.project_id)) if user is not None else None
        if membership is None:
            raise LabelerError(f"no user {name!r} in this project")
        if by == user.id:
            raise LabelerError("you cannot take your own role away: another admin, or `labeler user remove`, can")
        s.delete(membership)
        audit.record(s, "user.remove", user_id=by, project_id=ws.project_id, name=name, role=membership.role.value,
                     changed_user=user.id)
