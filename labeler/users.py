"""Users and their credentials: passwords as slow salted hashes (scrypt), API tokens as digests.

Nothing that could log someone in is stored in the clear: a token is shown once, when made."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select

from labeler import audit, models
from labeler.errors import LabelerError
from labeler.store import session_scope

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


def add_user(engine, name: str, role: models.Role, password: str | None = None, with_token: bool = False,
             by: int | None = None) -> str | None:
    """Create a user; return the API token when one was asked for (it is not stored, only its digest).

    `by`: the admin who did it, for the audit log (None: from the command line)."""
    if not name.strip():
        raise LabelerError("a user needs a name")
    if password is None and not with_token:
        raise LabelerError("give a password or ask for a token")
    if password is not None and len(password) < MIN_PASSWORD:
        raise LabelerError(f"passwords need at least {MIN_PASSWORD} characters")
    token = secrets.token_urlsafe(32) if with_token else None
    with session_scope(engine) as s:
        if s.scalars(select(models.User).where(models.User.name == name)).first():
            raise LabelerError(f"user {name!r} exists")
        user = models.User(name=name, role=role, password_hash=hash_password(password) if password else None,
                           token_hash=token_digest(token) if token else None)
        s.add(user)
        s.flush()
        audit.record(s, "user.add", user_id=by, name=name, role=role.value, new_user=user.id)
    return token


def authenticate(engine, name: str, password: str) -> models.User | None:
    with session_scope(engine) as s:
        user = s.scalars(select(models.User).where(models.User.name == name)).first()
    return user if user and verify_password(password, user.password_hash) else None


def user_for_token(engine, token: str) -> models.User | None:
    with session_scope(engine) as s:
        return s.scalars(select(models.User).where(models.User.token_hash == token_digest(token))).first()
