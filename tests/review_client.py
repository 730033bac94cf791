"""Helpers for the review UI tests: a logged-in HTTP client, and a real `labeler serve` process."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from labeler.store.models import Role
from labeler.store.users import add_user

PASSWORD = "long-password"
_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


def csrf_of(html: str) -> str:
    return _CSRF.search(html).group(1)


def login(client, name: str, password: str = PASSWORD):
    """Log in through the form like a browser; return the session's CSRF token for API writes."""
    page = client.get("/login")
    response = client.post("/login", data={"name": name, "password": password, "csrf_token": csrf_of(page.text)})
    assert response.status_code == 303, response.text
    home = client.get(response.headers["location"])
    assert home.status_code == 200
    return csrf_of(home.text)


def browser_login(chromium, base: str, name: str, path: str = "/review"):
    """A new 1,280 x 800 page of the headless browser, logged in as `name` through the login form, asking for `path`."""
    page = chromium.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{base}/login" + (f"?next={path}" if path else ""))
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    return page


def make_users(ws, **roles: Role) -> None:
    for name, role in roles.items():
        add_user(ws, name, role, password=PASSWORD)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(project_dir: Path, store_url: str, log: Path | None = None, args: tuple = (), started: list | None = None):
    """`labeler serve` in its own process on a free port; yields its base URL. Its output goes to `log`;
    `args` are more options; the process is appended to `started` when given."""
    port = free_port()
    env = dict(os.environ, LABELER_DATABASE_URL=store_url)
    output = open(log or os.devnull, "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "labeler.cli", "serve", "--port", str(port), "--project", str(project_dir), *args],
        env=env, stdout=output, stderr=subprocess.STDOUT)
    if started is not None:
        started.append(process)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start (exit {process.poll()}); see {log or 'its log'}")
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        output.close()
