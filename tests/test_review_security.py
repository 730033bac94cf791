"""Every route of the review app refuses anonymous requests and roles too low; the table below must list each."""

import re

import httpx
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from labeler.store.models import Role
from labeler.store.users import add_user
from review_ui.app import create_app
from tests.review_client import PASSWORD, csrf_of, login, make_users, serve

R, E, M, A = Role.reviewer, Role.expert, Role.manager, Role.admin
PUBLIC, ANY_USER, SESSION_FORM = "public", "any user", "a form of the user's session"
ALLOWED = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/login"): PUBLIC,
    ("POST", "/login"): PUBLIC,  # guarded by the login form's CSRF token instead
    ("POST", "/logout"): SESSION_FORM,  # needs the session's CSRF token in the form; a token has no session
    ("GET", "/"): ANY_USER,
    ("GET", "/review"): {R, E, A},
    ("GET", "/manage"): {M, A},
    ("GET", "/api/queue/next"): {R, E, A},
    ("POST", "/api/queue/submit"): {R, E, A},
    ("POST", "/api/queue/skip"): {R, E, A},
    ("POST", "/api/queue/undo"): {R, E, A},
    ("GET", "/api/queue/qualification"): {R, E, A},
    ("GET", "/api/items/{external_id}"): {E, M, A},
    ("POST", "/api/items/{item_id}/gold"): {E, A},
    ("GET", "/api/users"): {A},
    ("POST", "/api/users"): {A},
    ("DELETE", "/api/users/{name}"): {A},
    ("POST", "/api/users/{name}/{action}"): {A},
    ("POST", "/api/users/{name}/password"): {A},
    ("GET", "/api/metrics"): {M, A},
    ("GET", "/api/scorecards"): {M, A},
    ("GET", "/api/audit"): {M, A},
}


def routes(app) -> set[tuple[str, str]]:
    def walk(found):
        for route in found:
            included = getattr(route, "original_router", None)  # FastAPI >= 0.165 keeps included routers whole
            yield from walk(included.routes) if included is not None else [route]
    return {(method, route.path) for route in walk(app.routes) if isinstance(route, APIRoute)
            for method in route.methods - {"HEAD"}}


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def test_every_route_refuses_anonymous_requests_and_roles_too_low(ws):
    app = create_app(ws, secure_cookies=False, session_secret="s")
    assert routes(app) == set(ALLOWED)  # a new route must say here who may use it
    tokens = {role: add_user(ws, f"user-{role.value}", role, with_token=True) for role in Role}
    web = TestClient(app, follow_redirects=False)
    for (method, path), allowed in ALLOWED.items():
        url = concrete(path)
        anonymous = web.request(method, url, json={})
        if allowed == PUBLIC:
            assert anonymous.status_code not in (401, 403), (method, path)
            continue
        # Anonymous: the API says 401, pages send people to the login form, a form post without a session's token is 403.
        expected = 401 if path.startswith("/api/") else 403 if method == "POST" else 303
        assert anonymous.status_code == expected, (method, path, anonymous.status_code)
        for role, token in tokens.items():
            status = web.request(method, url, json={}, headers={"Authorization": f"Bearer {token}"}).status_code
            if allowed == SESSION_FORM:
                assert status == 403, (method, path, role, status)
            elif allowed == ANY_USER or role in allowed:
                assert status not in (401, 403), (method, path, role, status)
            else:
                assert status == 403, (method, path, role, status)


def test_session_writes_without_the_csrf_token_are_refused_on_every_api_route(ws):
    app = create_app(ws, secure_cookies=False, session_secret="s")
    make_users(ws, root=Role.admin)
    web = TestClient(app, follow_redirects=False)
    csrf = login(web, "root")
    for method, path in sorted(routes(app)):
        if method == "GET" or not path.startswith("/api/"):
            continue
        url = concrete(path)
        assert web.request(method, url, json={}).status_code == 403, path
        assert web.request(method, url, json={}, headers={"X-CSRF-Token": csrf}).status_code != 403, path


def test_no_password_or_token_reaches_the_server_log(ws, tmp_path):
    make_users(ws, ann=Role.reviewer)
    token = add_user(ws, "bot", Role.reviewer, with_token=True)
    log = tmp_path / "serve.log"
    with serve(ws.project.root, str(ws.engine.url.render_as_string(hide_password=False)), log=log) as base:
        with httpx.Client(base_url=base, follow_redirects=False) as web:
            login(web, "ann")
            web.post("/login", data={"name": "ann", "password": "wrong-password-123", "csrf_token": "x"})
        assert httpx.get(f"{base}/api/queue/next", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert httpx.get(f"{base}/api/queue/next", headers={"Authorization": "Bearer not-a-token-456"}).status_code == 401
    written = log.read_text()
    assert "Review UI for" in written  # the log is there, and it is not empty
    for secret in (PASSWORD, token, "wrong-password-123", "not-a-token-456"):
        assert secret not in written


def test_bodies_are_capped_and_anonymous_writes_refused_before_they_are_read(ws):
    """One anonymous 300 MB body took the server from 274 MB to 1,162 MB before it answered 401."""
    app = create_app(ws, secure_cookies=False, session_secret="s", max_body=1000)
    token = add_user(ws, "bot", Role.reviewer, with_token=True)
    web = TestClient(app, follow_redirects=False)
    read = []

    def stream():  # a body sent in pieces with no Content-Length: counted as it arrives
        for _ in range(100):
            read.append(1)
            yield b"x" * 100

    anonymous = web.post("/api/queue/submit", content=stream())
    assert anonymous.status_code == 401 and len(read) <= 1  # refused before the body was read
    bearer = {"Authorization": f"Bearer {token}"}
    assert web.post("/api/queue/submit", content=b"{" + b" " * 2000 + b"}", headers=bearer).status_code == 413
    assert web.post("/api/queue/submit", content=stream(), headers=bearer).status_code == 413  # no length given
    small = web.post("/api/queue/submit", json={"item_id": 1, "label": "positive", "client_id": "c"}, headers=bearer)
    assert small.status_code == 409  # within the limit: on to the route (no lease on that item)
    assert web.post("/login", data={"name": "x" * 2000, "password": "y"}).status_code == 413  # forms too


def test_a_real_server_answers_a_huge_body_without_holding_it(ws):
    def rss(pid: int) -> int:  # resident memory, in KiB
        status = open(f"/proc/{pid}/status").read()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))

    token = add_user(ws, "bot", Role.reviewer, with_token=True)
    started = []
    with serve(ws.project.root, str(ws.engine.url.render_as_string(hide_password=False)), started=started) as base:
        before = rss(started[0].pid)
        body = b'{"item_id": 1, "label": "' + b"x" * 100_000_000 + b'"}'  # 100 MB
        for headers in ({}, {"Authorization": f"Bearer {token}"}):
            answer = httpx.post(f"{base}/api/queue/submit", content=body, headers=headers, timeout=60)
            assert answer.status_code == (413 if headers else 401)
        assert rss(started[0].pid) - before < 30_000  # far from the 100 MB it was sent


def _store_url(ws) -> str:
    return ws.engine.url.render_as_string(hide_password=False)


def test_projects_sharing_a_store_are_isolated(ws, tmp_path):
    """Project B's server leased project A's item, took B's label for it and confirmed it."""
    from labeler.store.workspace import open_workspace
    from tests.conftest import write_project
    from tests.test_review_queue import needing_review

    needing_review(ws, tmp_path, 2)  # project A's items, waiting for review
    other = write_project(tmp_path / "b", yaml_text="name: project-b\nlabels: {spam: junk, ham: fine}\nfields: [text]\n")
    b = open_workspace(other, url=_store_url(ws))
    make_users(ws, ann=Role.reviewer, both=Role.reviewer)
    add_user(b, "both", Role.expert)  # the same person, with another role in B (their password stays)
    web_a, web_b = (TestClient(create_app(w, secure_cookies=False, session_secret="s"), follow_redirects=False)
                    for w in (ws, b))
    assert web_b.post("/login", data={"name": "ann", "password": PASSWORD, "csrf_token": csrf_of(
        web_b.get("/login").text)}, follow_redirects=False).status_code == 401  # no role in B
    csrf_a = login(web_a, "both")
    leased = web_a.get("/api/queue/next").json()["item"]
    csrf_b = login(web_b, "both")
    assert web_b.get("/api/queue/next").json()["item"] is None  # A's lease is not B's work
    stolen = web_b.post("/api/queue/submit", json={"item_id": leased["item_id"], "label": "spam", "client_id": "x"},
                        headers={"X-CSRF-Token": csrf_b})
    assert stolen.status_code == 409  # not B's item: no lease on it there, whatever the label
    foreign = web_a.post("/api/queue/submit", json={"item_id": leased["item_id"], "label": "spam", "client_id": "y"},
                         headers={"X-CSRF-Token": csrf_a})
    assert foreign.status_code == 422 and "unknown label" in foreign.json()["detail"]  # B's label in A: refused
    web_b.post("/api/queue/skip", json={"item_id": leased["item_id"]}, headers={"X-CSRF-Token": csrf_b})
    assert web_a.get("/api/queue/next").json()["item"]["item_id"] == leased["item_id"]  # A's lease stands
    roles = {name: web.get("/api/users", headers={}).status_code for name, web in (("a", web_a), ("b", web_b))}
    assert roles == {"a": 403, "b": 403}  # reviewers and experts do not list users
    assert web_a.post("/api/queue/submit", json={"item_id": leased["item_id"], "label": "positive", "client_id": "z"},
                      headers={"X-CSRF-Token": csrf_a}).json()["status"] == "recorded"
    b.engine.dispose()


def test_login_is_throttled_per_account_and_unknown_names_cost_the_same(ws):
    import time

    make_users(ws, ann=Role.reviewer)
    web = TestClient(create_app(ws, secure_cookies=False, session_secret="s"), follow_redirects=False)

    def attempt(name, password):
        return web.post("/login", data={"name": name, "password": password, "csrf_token": csrf_of(web.get("/login").text)})

    for _ in range(5):
        assert attempt("ann", "wrong-guess-123").status_code == 401
    locked = attempt("ann", PASSWORD)  # the right password, after five wrong ones: still refused
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0 and "Too many" in locked.text
    assert web.get("/api/queue/next").status_code == 401

    fresh = TestClient(create_app(ws, secure_cookies=False, session_secret="s"), follow_redirects=False)
    web = fresh
    make_users(ws, bob=Role.reviewer)
    spent = {"bob": [], "nobody-at-all": []}
    for _ in range(4):  # interleaved, so a busy machine slows both alike
        for name, times in spent.items():
            token = csrf_of(web.get("/login").text)
            started = time.perf_counter()
            web.post("/login", data={"name": name, "password": "wrong-guess-456", "csrf_token": token})
            times.append(time.perf_counter() - started)
    # The fastest of each: a stall of the machine (CI runs tests side by side) lengthens single tries, never
    # the least; skipping scrypt for unknown names would make theirs some 50 times shorter.
    known, unknown = min(spent["bob"]), min(spent["nobody-at-all"])
    assert 0.5 < known / unknown < 2  # scrypt runs for unknown names too: no timing tell


def test_sessions_and_tokens_can_be_ended_and_users_disabled(ws):
    from labeler.store.users import change_user

    make_users(ws, ann=Role.reviewer, root=Role.admin)
    token = add_user(ws, "bot", Role.reviewer, with_token=True)
    app = create_app(ws, secure_cookies=False, session_secret="s")
    web = TestClient(app, follow_redirects=False)
    csrf = login(web, "ann")
    captured = dict(web.cookies)  # someone copies the cookie
    web.post("/logout", data={"csrf_token": csrf})
    thief = TestClient(app, cookies=captured, follow_redirects=False)
    assert thief.get("/api/queue/next").status_code == 401  # the logout ended it everywhere
    bearer = {"Authorization": f"Bearer {token}"}
    assert web.get("/api/queue/next", headers=bearer).status_code == 200
    admin = TestClient(app, follow_redirects=False)
    admin_csrf = login(admin, "root")
    assert admin.post("/api/users/bot/revoke-token", headers={"X-CSRF-Token": admin_csrf}).status_code == 204
    assert web.get("/api/queue/next", headers=bearer).status_code == 401
    again = TestClient(app, follow_redirects=False)
    login(again, "ann")
    assert admin.post("/api/users/ann/disable", headers={"X-CSRF-Token": admin_csrf}).status_code == 204
    assert again.get("/api/queue/next").status_code == 401  # disabled: the live session ends too
    assert again.post("/login", data={"name": "ann", "password": PASSWORD,
                                      "csrf_token": csrf_of(again.get("/login").text)}).status_code == 401
    change_user(ws, "ann", "enable")
    assert admin.post("/api/users/ann/password", json={"password": "a-new-password"},
                      headers={"X-CSRF-Token": admin_csrf}).status_code == 204
    login(again, "ann", "a-new-password")
    events = [e["action"] for e in admin.get("/api/audit").json()]
    assert {"user.revoke-token", "user.disable", "user.enable", "user.passwd", "user.logout"} <= set(events)


def test_a_strangers_guesses_lock_a_name_only_from_the_strangers_address(ws):
    make_users(ws, ann=Role.reviewer)
    app = create_app(ws, secure_cookies=False, session_secret="s")

    def attempt(address, name, password):
        web = TestClient(app, follow_redirects=False, client=(address, 5000))
        return web.post("/login", data={"name": name, "password": password, "csrf_token": csrf_of(web.get("/login").text)})

    for _ in range(5):
        assert attempt("203.0.113.7", "ann", "wrong-guess-123").status_code == 401
    assert attempt("203.0.113.7", "ann", PASSWORD).status_code == 429  # the stranger: refused, even when right
    assert attempt("198.51.100.2", "ann", PASSWORD).status_code == 303  # ann, from her own address: in
    for k in range(50 - 5):  # guesses from many addresses reach the name's own cap
        assert attempt(f"192.0.2.{k // 5}", "ann", "wrong-guess-456").status_code == 401
    assert attempt("198.51.100.3", "ann", PASSWORD).status_code == 429


def test_forwarded_addresses_are_believed_only_from_named_proxies(ws):
    """Any client over loopback picked its own address with X-Forwarded-For: 60 of 60 guesses checked."""
    store = _store_url(ws)

    def guesses(args=()):
        with serve(ws.project.root, store, args=args) as base, httpx.Client(base_url=base) as web:
            csrf = csrf_of(web.get("/login").text)
            return [web.post("/login", data={"name": f"name-{k}", "password": "guess-guess", "csrf_token": csrf},
                             headers={"X-Forwarded-For": f"198.51.100.{k}"}).status_code for k in range(31)]

    assert guesses()[-1] == 429  # every guess counted against the connection's own address: 30, then refused
    assert set(guesses(("--forwarded-allow-ips", "127.0.0.1"))) == {401}  # behind a named proxy: its clients' addresses
