"""Two projects on one store: an admin of one may not take over, lock out or watch the users of the other."""

from fastapi.testclient import TestClient

from labeler.store.models import Role
from labeler.store.users import add_user, authenticate, change_user
from labeler.store.workspace import open_workspace
from review_ui.app import create_app
from tests.conftest import write_project
from tests.review_client import PASSWORD, login, make_users

CREDENTIAL_CHANGES = [("password", {"password": "taken-over-pass"}), ("disable", None), ("enable", None),
                      ("revoke-token", None), ("logout", None)]


def _two_projects(ws, tmp_path):
    b = open_workspace(write_project(tmp_path / "b", name="project-b"), url=ws.engine.url.render_as_string(hide_password=False))
    make_users(ws, alice=Role.admin, ann=Role.reviewer, sam=Role.reviewer, carol=Role.admin, mona=Role.manager)
    make_users(b, bob=Role.admin, bree=Role.reviewer)
    add_user(b, "sam", Role.reviewer)  # works in both
    add_user(b, "carol", Role.admin)  # an admin of both
    clients = {key: TestClient(create_app(w, secure_cookies=False, session_secret="s"), follow_redirects=False)
               for key, w in (("a", ws), ("b", b))}
    return b, clients


def _change(web, csrf, name, action, body=None):
    return web.post(f"/api/users/{name}/{action}", json=body, headers={"X-CSRF-Token": csrf}).status_code


def test_an_admin_changes_the_credentials_only_of_users_wholly_in_their_projects(ws, tmp_path):
    b, clients = _two_projects(ws, tmp_path)
    for key, here, there, admin, victim, mate in (("a", ws, b, "alice", "bob", "bree"), ("b", b, ws, "bob", "alice", "ann")):
        web = clients[key]
        csrf = login(web, admin)
        # The takeover: give the other project's admin a role here, then set their password.
        added = web.post("/api/users", json={"name": victim, "role": "reviewer"}, headers={"X-CSRF-Token": csrf})
        assert added.status_code == 201  # a membership here is this admin's to give
        for name in (victim, "sam"):  # both also work in a project this admin does not run
            for action, body in CREDENTIAL_CHANGES:
                assert _change(web, csrf, name, action, body) == 403, (admin, name, action)
        assert _change(web, csrf, mate, "disable") == 422  # the other project's user is not here at all
        assert authenticate(there, victim, PASSWORD) is not None and authenticate(there, mate, PASSWORD) is not None
        assert authenticate(there, "sam", PASSWORD) is not None
        listed = {u["name"] for u in web.get("/api/users").json()}
        assert mate not in listed
        assert web.delete(f"/api/users/{victim}", headers={"X-CSRF-Token": csrf}).status_code == 204
        assert authenticate(here, victim, PASSWORD) is None and authenticate(there, victim, PASSWORD) is not None
    # Users wholly in one's projects stay one's to manage; an admin of both manages sam.
    web = clients["a"]
    csrf = login(web, "alice")
    assert _change(web, csrf, "ann", "password", {"password": "reset-by-admin"}) == 204
    assert authenticate(ws, "ann", "reset-by-admin") is not None
    csrf = login(web, "carol")
    assert _change(web, csrf, "sam", "password", {"password": "reset-by-carol"}) == 204
    assert authenticate(b, "sam", "reset-by-carol") is not None
    change_user(ws, "sam", "passwd", password=PASSWORD)  # the command line on the store may
    assert authenticate(b, "sam", PASSWORD) is not None
    b.engine.dispose()


def test_users_change_their_own_credentials_with_their_password(ws, tmp_path):
    b, clients = _two_projects(ws, tmp_path)
    web = clients["a"]
    csrf = login(web, "sam")
    assert _change(web, csrf, "ann", "password", {"password": "not-mine-to-set"}) == 403
    assert _change(web, csrf, "ann", "logout") == 403
    assert _change(web, csrf, "sam", "password", {"password": "my-new-password"}) == 403  # no current password
    assert _change(web, csrf, "sam", "password", {"password": "my-new-password", "current_password": "wrong-one"}) == 403
    assert _change(web, csrf, "sam", "password", {"password": "my-new-password", "current_password": PASSWORD}) == 204
    assert authenticate(b, "sam", "my-new-password") is not None  # one login, every project
    b.engine.dispose()


def test_the_audit_log_shows_only_this_projects_events(ws, tmp_path):
    b, clients = _two_projects(ws, tmp_path)
    web_b = clients["b"]
    csrf = login(web_b, "bob")
    assert _change(web_b, csrf, "bree", "revoke-token") == 204
    web_a = clients["a"]
    login(web_a, "mona")
    seen = web_a.get("/api/audit").json()
    assert seen and all(e.get("name") not in ("bob", "bree") for e in seen)
    assert not [e for e in seen if e["action"] == "user.revoke-token"]
    assert "user.revoke-token" in {e["action"] for e in web_b.get("/api/audit").json()}
    b.engine.dispose()
