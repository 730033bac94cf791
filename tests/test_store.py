import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlmodel import SQLModel

from labeler.errors import LabelerError
from labeler.store.engine import database_url, normalise_url, open_store, redacted, upgrade


def test_migrations_build_the_whole_schema_from_empty(store_url):
    engine = open_store(store_url)
    try:
        tables = set(inspect(engine).get_table_names())
        assert {"project", "item", "goldlabel", "annotator", "promptversion", "vote", "decision",
                "user", "reviewtask", "run", "alembic_version"} <= tables
        # The migrations and the models agree: autogenerate finds nothing to change.
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
        assert diff == []
        upgrade(engine)  # a second upgrade is a no-op
    finally:
        engine.dispose()


def test_sqlite_store_uses_wal(tmp_path):
    engine = open_store(f"sqlite:///{tmp_path / 's.db'}")
    with engine.connect() as c:
        assert c.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert c.execute(text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()


def test_default_store_is_a_file_in_the_project(tmp_path, monkeypatch):
    monkeypatch.delenv("LABELER_DATABASE_URL", raising=False)
    assert database_url(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'labeler.db'}"
    monkeypatch.setenv("LABELER_DATABASE_URL", "postgresql://u:secret@db/x")
    assert database_url(tmp_path) == "postgresql+psycopg://u:secret@db/x"


def test_urls_are_normalised_and_redacted():
    assert normalise_url("postgres://a@b/c") == "postgresql+psycopg://a@b/c"
    assert "secret" not in redacted("postgresql+psycopg://u:secret@db/x")


def test_unreachable_store_is_a_clear_error_without_the_password():
    with pytest.raises(LabelerError) as info:
        open_store("postgresql://u:hunter2@127.0.0.1:1/none")
    assert "cannot open the store" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_postgresql_connections_never_prepare_statements(pg_url):
    """A prepared statement's generic plan, made while a table looked empty, turned a 200,000-item import
    from 15 s into 7 minutes (each chunk's lookup by id scanned the table); plain statements are planned each time."""
    engine = open_store(pg_url)
    with engine.connect() as c:
        assert c.connection.driver_connection.prepare_threshold is None
    engine.dispose()


def test_store_urls_that_cannot_work_are_one_line_errors(monkeypatch):
    for url, message in [("::nonsense", "is not a database URL"), ("mysql://root@localhost/x", "SQLite or PostgreSQL")]:
        with pytest.raises(LabelerError, match=message):
            open_store(url)
    monkeypatch.setitem(__import__("sys").modules, "psycopg", None)  # as if the `postgres` extra were missing
    with pytest.raises(LabelerError, match=r"pip install 'labeler\[postgres\]'"):
        open_store("postgresql://u@127.0.0.1/x")


def _store_at(store_url: str, revision: str, *statements: str):
    """An engine on a store migrated only to `revision`, holding the rows the statements insert."""
    from labeler.store.engine import make_engine

    engine = make_engine(store_url)
    upgrade(engine, revision)
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement))
    return engine


def test_users_of_a_store_before_memberships_keep_their_role_in_every_project(store_url):
    engine = _store_at(
        store_url, "0005",
        "INSERT INTO project (name, labels, config, created_at) VALUES "
        "('a', '[]', '{}', CURRENT_TIMESTAMP), ('b', '[]', '{}', CURRENT_TIMESTAMP)",
        "INSERT INTO \"user\" (name, role, created_at) VALUES ('eve', 'expert', CURRENT_TIMESTAMP)")
    upgrade(engine)
    with engine.connect() as c:
        rows = c.execute(text("SELECT p.name, m.role FROM membership m JOIN project p ON p.id = m.project_id "
                              "ORDER BY p.name")).all()
        assert [(name, role) for name, role in rows] == [("a", "expert"), ("b", "expert")]
        assert c.execute(text('SELECT disabled, session_generation FROM "user"')).one() in ((0, 0), (False, 0))
    engine.dispose()


def test_audit_events_and_client_ids_of_a_store_before_0009_keep_their_project(store_url):
    engine = _store_at(
        store_url, "0008",
        "INSERT INTO project (id, name, labels, config, created_at) VALUES "
        "(1, 'a', '[]', '{}', CURRENT_TIMESTAMP), (2, 'b', '[]', '{}', CURRENT_TIMESTAMP)",
        "INSERT INTO \"user\" (id, name, created_at) VALUES (1, 'eve', CURRENT_TIMESTAMP)",
        "INSERT INTO item (id, project_id, external_id, fields, content_hash, created_at) VALUES "
        "(1, 2, 'x', '{}', 'h1', CURRENT_TIMESTAMP), (2, 2, 'y', '{}', 'h2', CURRENT_TIMESTAMP)",
        "INSERT INTO reviewtask (item_id, user_id, leased_at, expires_at, client_id) VALUES "
        "(1, 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 'c1')",
        "INSERT INTO auditevent (at, user_id, action, item_id, details) VALUES "
        "(CURRENT_TIMESTAMP, 1, 'review.submit', 1, '{}'), (CURRENT_TIMESTAMP, 1, 'user.add', NULL, '{}')")
    upgrade(engine)
    with engine.begin() as c:
        assert c.execute(text("SELECT action, project_id FROM auditevent ORDER BY id")).all() == [
            ("review.submit", 2), ("user.add", None)]
        c.execute(text("INSERT INTO reviewtask (item_id, user_id, leased_at, expires_at, client_id, blind) VALUES "
                       "(2, 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 'c1', false)"))  # another item: its own id
    engine.dispose()


def test_decisions_of_a_store_before_0011_take_their_items_project_for_the_queue_index(store_url):
    engine = _store_at(
        store_url, "0010",
        "INSERT INTO project (id, name, labels, config, created_at) VALUES "
        "(1, 'a', '[]', '{}', CURRENT_TIMESTAMP), (2, 'b', '[]', '{}', CURRENT_TIMESTAMP)",
        "INSERT INTO item (id, project_id, external_id, fields, content_hash, created_at) VALUES "
        "(1, 2, 'x', '{}', 'h1', CURRENT_TIMESTAMP), (2, 1, 'y', '{}', 'h2', CURRENT_TIMESTAMP)",
        "INSERT INTO decision (item_id, state, method, details, updated_at) VALUES "
        "(1, 'needs_review', 'm', '{}', CURRENT_TIMESTAMP), (2, 'auto', 'm', '{}', CURRENT_TIMESTAMP)")
    upgrade(engine)
    with engine.connect() as c:
        assert c.execute(text("SELECT item_id, project_id FROM decision ORDER BY item_id")).all() == [(1, 2), (2, 1)]
    columns = [i["column_names"] for i in inspect(engine).get_indexes("decision") if i["name"] == "ix_decision_queue"]
    assert columns == [["project_id", "state", "review_count", "item_id"]]
    engine.dispose()
