"""Shared fixtures: project folders, and a store on SQLite or on PostgreSQL."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from labeler.store.engine import normalise_url
from labeler.store.workspace import open_workspace

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
POSTGRES_ENV = "LABELER_TEST_POSTGRES_URL"

needs_datasets = pytest.mark.skipif(not DATASETS.is_dir(), reason=f"{DATASETS} is absent")
CHROMIUM = "/usr/bin/chromium"  # Debian's; playwright's own browser download does not work here
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"  # screenshots, for people to look at


# LABELER_TEST_STORE=sqlite|postgres runs the whole suite on one store (.ci/run runs it once on each):
# on postgres every test gets a fresh database as $LABELER_DATABASE_URL, which every command uses.
# Unset: SQLite, plus PostgreSQL for the tests that take `store_url`, where a server is given.
STORE_ENV = "LABELER_TEST_STORE"
STORE = os.environ.get(STORE_ENV, "")


def pytest_collection_modifyitems(items):
    # Tests that take `store_url` run on both stores in the default pass (SQLite, and PostgreSQL where a
    # server is given): marked, so that a whole-suite pass on PostgreSQL may leave them out (.ci/run).
    for item in items:
        if "store_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.both_stores)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch):
    # A developer's own settings must not leak into tests.
    monkeypatch.delenv("LABELER_DATABASE_URL", raising=False)
    monkeypatch.delenv("LABELER_PROJECT", raising=False)
    if STORE != "postgres":
        yield
        return
    if not os.environ.get(POSTGRES_ENV):
        raise RuntimeError(f"{STORE_ENV}=postgres needs {POSTGRES_ENV}")
    database = postgres_database()
    monkeypatch.setenv("LABELER_DATABASE_URL", next(database))
    yield
    database.close()  # drops it


def postgres_database():
    """Create a fresh database on the test server; yield its URL; drop it."""
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"{POSTGRES_ENV} is not set")
    admin_url = make_url(normalise_url(base))
    name = f"labeler_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL database, for what only PostgreSQL does (workers, cutting connections)."""
    yield from postgres_database()


@pytest.fixture(params=[STORE] if STORE else ["sqlite", "postgres"])
def store_url(request, tmp_path):
    """A store URL: a SQLite file, or a fresh PostgreSQL database when LABELER_TEST_POSTGRES_URL is set."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    else:
        yield from postgres_database()


PROJECT_YAML = """\
name: {name}
labels:
  positive: liked it
  negative: did not like it
  neutral: no opinion
fields: [text]
guidelines: guidelines.md
annotators:
  - name: tfidf
    kind: model
routing:
  target_accuracy: 0.9
  review_blind_share: 0  # tests of blind items set their own share
  review_order: import  # tests of the queue's mechanics follow items in a known order
"""


def write_project(root: Path, name: str = "test-project", yaml_text: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "labeler.yaml").write_text(yaml_text or PROJECT_YAML.format(name=name), encoding="utf-8")
    (root / "guidelines.md").write_text("# Test\n\n## Labels\n\n### positive\nliked it\n", encoding="utf-8")
    return root


@pytest.fixture
def project_dir(tmp_path):
    return write_project(tmp_path / "proj")


@pytest.fixture
def ws(project_dir, store_url):
    workspace = open_workspace(project_dir, url=store_url)
    yield workspace
    workspace.engine.dispose()


def write_file(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


@pytest.fixture
def chromium():
    """Headless Chromium driven by Playwright."""
    playwright = pytest.importorskip("playwright.sync_api", reason="install the `browser` extra")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (Debian package chromium; .ci/run installs it)")
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


def store_bytes(ws) -> bytes:
    """Everything the store holds: the SQLite files (WAL included) or every row of every PostgreSQL table."""
    if ws.engine.dialect.name == "sqlite":
        path = Path(ws.engine.url.database)
        return b"".join(f.read_bytes() for f in path.parent.glob(path.name + "*"))
    with ws.engine.connect() as c:
        tables = c.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars().all()
        return "\n".join(str(row) for t in tables for row in c.execute(text(f'SELECT t::text FROM "{t}" t'))).encode()
