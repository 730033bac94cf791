import subprocess
import sys

import pytest
from sqlalchemy import select

from labeler.errors import LabelerError
from labeler.store import models
from labeler.store.users import add_user, authenticate, hash_password, user_for_token, verify_password
from labeler.store.workspace import open_workspace
from tests.conftest import store_bytes
from tests.test_cli import labeler


def test_password_hashes_are_salted_and_verify():
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first != second and first.startswith("scrypt$")
    assert verify_password("correct horse", first) and not verify_password("wrong horse", first)
    assert not verify_password("anything", None)


def test_users_log_in_by_password_or_token(ws):
    add_user(ws, "ann", models.Role.reviewer, password="s3cret-pass")
    token = add_user(ws, "bot", models.Role.manager, with_token=True)
    assert authenticate(ws, "ann", "s3cret-pass").role == models.Role.reviewer
    assert authenticate(ws, "ann", "nope-nope") is None and authenticate(ws, "zed", "s3cret-pass") is None
    assert user_for_token(ws, token).name == "bot" and user_for_token(ws, token + "x") is None
    with ws.session() as s:
        stored = s.scalars(select(models.User)).all()
    assert all(token not in (u.token_hash or "") and "s3cret-pass" not in (u.password_hash or "") for u in stored)
    with pytest.raises(LabelerError, match="exists"):
        add_user(ws, "ann", models.Role.expert, password="another-pass")
    with pytest.raises(LabelerError, match="at least 8"):
        add_user(ws, "bob", models.Role.expert, password="short")


def test_user_add_command(tmp_path):
    root = tmp_path / "p"
    labeler("init", root)
    made = labeler("user", "add", "bot", "--role", "manager", "--token", "-p", root)
    token = made.stdout.strip()
    assert len(token) > 30 and "Created manager bot" in made.stderr
    result = subprocess.run([sys.executable, "-m", "labeler.cli", "user", "add", "ann", "--password-stdin", "-p", str(root)],
                            input="long-enough-pass\n", capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "Created reviewer ann" in result.stderr
    ws = open_workspace(root)
    stored = store_bytes(ws)
    assert b"bot" in stored and token.encode() not in stored and b"long-enough-pass" not in stored
    ws.engine.dispose()
    bad = labeler("user", "add", "ann", "--token", "-p", root, check=False)
    assert bad.returncode == 1 and "exists" in bad.stderr


def test_user_commands_disable_enable_passwd_and_revoke(tmp_path):
    root = tmp_path / "p"
    labeler("init", root)
    token = labeler("user", "add", "bot", "--token", "-p", root).stdout.strip()
    subprocess.run([sys.executable, "-m", "labeler.cli", "user", "add", "ann", "--password-stdin", "-p", str(root)],
                   input="long-enough-pass\n", capture_output=True, text=True, timeout=60, check=True)
    ws = open_workspace(root)
    assert user_for_token(ws, token) is not None
    labeler("user", "revoke-token", "bot", "-p", root)
    assert user_for_token(ws, token) is None
    fresh = labeler("user", "new-token", "bot", "-p", root).stdout.strip()
    assert user_for_token(ws, fresh).name == "bot"
    labeler("user", "disable", "ann", "-p", root)
    assert authenticate(ws, "ann", "long-enough-pass") is None
    labeler("user", "enable", "ann", "-p", root)
    subprocess.run([sys.executable, "-m", "labeler.cli", "user", "passwd", "ann", "--password-stdin", "-p", str(root)],
                   input="another-long-pass\n", capture_output=True, text=True, timeout=60, check=True)
    assert authenticate(ws, "ann", "another-long-pass") is not None and authenticate(ws, "ann", "long-enough-pass") is None
    missing = labeler("user", "disable", "nobody", "-p", root, check=False)
    assert missing.returncode == 1 and "no user 'nobody' in this project" in missing.stderr
    ws.engine.dispose()
