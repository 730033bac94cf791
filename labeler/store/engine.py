"""Engines and sessions: SQLite in the project folder by default, PostgreSQL by URL."""

from __future__ import annotations

import functools
import os
import threading
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session, create_engine

from labeler.errors import LabelerError

DATABASE_ENV = "LABELER_DATABASE_URL"
SQLITE_BUSY_SECONDS = 30  # how long a SQLite writer waits for the lock before the store is "busy"
SQLITE_FILE = "labeler.db"
POOL_SIZE = 20  # connections an engine keeps open, and as many again for bursts
MIGRATIONS = Path(__file__).parent / "migrations"


def database_url(project_dir: Path | None) -> str:
    """The store for a project: $LABELER_DATABASE_URL, else a SQLite file in the project folder."""
    url = os.environ.get(DATABASE_ENV)
    if url:
        return normalise_url(url)
    if project_dir is None:
        raise LabelerError(f"no project folder and no {DATABASE_ENV}")
    return f"sqlite:///{Path(project_dir).resolve() / SQLITE_FILE}"


def normalise_url(url: str) -> str:
    """Plain postgresql:// URLs use psycopg 3, the driver we install."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    try:
        dialect = make_url(url).get_backend_name()
    except Exception:  # ArgumentError and kin: not a URL at all
        raise LabelerError(f"{DATABASE_ENV} is not a database URL; use postgresql://user@host/db "
                           f"(or leave it unset for a SQLite file in the project)") from None
    if dialect not in ("sqlite", "postgresql"):
        raise LabelerError(f"the store must be SQLite or PostgreSQL, not {dialect} ({redacted(url)})")
    if dialect == "postgresql":
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise LabelerError("a PostgreSQL store needs its extra: pip install 'labeler[postgres]'") from None
    # Connections kept open for a server's worker threads (anyio runs up to 40 requests at once): past the
    # pool's size each request beyond it opened and closed its own, which under 20 reviewers at once cost
    # more than their answers on PostgreSQL. They are made only when needed.
    pool = {"pool_size": POOL_SIZE, "max_overflow": POOL_SIZE}
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_SECONDS, "check_same_thread": False}, **pool)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # No server-side prepared statements: after five runs psycopg prepares a query and PostgreSQL may
    # settle on a generic plan made when a table looked empty, e.g. a big import's lookups by id
    # scanning the whole table each time (measured: 200,000 items took 7 minutes instead of 15 s).
    return create_engine(url, pool_pre_ping=True, connect_args={"prepare_threshold": None}, **pool)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets readers (the review UI) work while a run writes; foreign keys are off by default.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


def alembic_config():
    """Alembic's settings for the store's migrations (labeler/store/migrations)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to the newest migration (or to `revision`)."""
    from alembic import command

    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def open_store(url: str) -> Engine:
    engine = make_engine(url)
    try:
        upgrade(engine)
    except Exception as exc:  # an unreachable server, a read-only file, a full disk...
        raise LabelerError(f"cannot open the store at {redacted(url)}: {exc}") from exc
    return engine


def open_store_for_reading(url: str) -> Engine:
    """The store for commands that only read (export). A SQLite store on a full disk cannot be opened the
    usual way (WAL needs room for its shared-memory index): when nothing waits in its write-ahead log, the
    main file holds everything, and it is read as it stands (immutable: no index, no locks, no write)."""
    try:
        return open_store(url)
    except LabelerError:
        parsed = make_url(normalise_url(url))
        path = Path(parsed.database or "") if parsed.get_backend_name() == "sqlite" else None
        wal = path.with_name(path.name + "-wal") if path else None
        if path is None or not path.is_file() or (wal.exists() and wal.stat().st_size > 0):
            raise
    engine = make_engine(f"sqlite:///file:{path.resolve()}?mode=ro&immutable=1&uri=true")
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    with engine.connect() as connection:
        if MigrationContext.configure(connection).get_current_revision() != \
                ScriptDirectory.from_config(alembic_config()).get_current_head():
            raise LabelerError(f"cannot open the store at {redacted(url)}: it needs an upgrade, and it cannot be written")
    return engine


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def _insert(session, model):
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(model.__table__)


def upsert(session, model, rows: list[dict], keys: list[str], where=None) -> None:
    """Insert rows, replacing the other columns of rows whose `keys` already exist (only those
    whose current values meet `where`, when given: the check and the write are one statement)."""
    if not rows:
        return
    statement = _insert(session, model)
    updates = {c: statement.excluded[c] for c in rows[0] if c not in keys}
    session.execute(statement.on_conflict_do_update(index_elements=keys, set_=updates, where=where), rows)


def insert_new(session, model, rows: list[dict]) -> None:
    """Insert rows, skipping any that collide with a unique key (idempotent writes)."""
    if rows:
        session.execute(_insert(session, model).on_conflict_do_nothing(), rows)


@contextmanager
def write_transaction(engine: Engine):
    """A transaction for check-then-write work that must not interleave.

    SQLite: BEGIN IMMEDIATE takes the single write lock at the start, so two such transactions
    run one after the other. PostgreSQL: a plain transaction; callers lock the rows they decide
    on (SELECT ... FOR UPDATE SKIP LOCKED)."""
    if engine.dialect.name != "sqlite":
        with engine.begin() as connection:
            yield connection
        return
    # Threads of one process queue for the lock here rather than in SQLite's busy handler, which sleeps
    # and retries (1, 2, 5, 10... ms): under a few reviewers at once that made every tenth answer wait 100+ ms.
    with _writer_lock(engine), engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.exec_driver_sql("ROLLBACK")
            raise
        connection.exec_driver_sql("COMMIT")


_writer_locks: "weakref.WeakKeyDictionary[Engine, threading.RLock]" = weakref.WeakKeyDictionary()
_locks_lock = threading.Lock()


def _writer_lock(engine: Engine) -> threading.RLock:
    with _locks_lock:
        return _writer_locks.setdefault(engine, threading.RLock())


def is_deadlock(exc: BaseException) -> bool:
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) == "40P01"


def is_busy(exc: BaseException) -> bool:
    """The store could not answer now but may in a moment: SQLite's lock held too long, a cut connection."""
    if not isinstance(exc, OperationalError):
        return False
    text = str(exc.orig).lower()
    return "locked" in text or "busy" in text or exc.connection_invalidated or is_deadlock(exc)


def retry_deadlock(fn):
    """Run a transaction again once if PostgreSQL chose it as a deadlock's victim (it was rolled back whole)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DBAPIError as exc:
            if not is_deadlock(exc):
                raise
        return fn(*args, **kwargs)

    return wrapper
