"""Fixtures in the style of Flask's tutorial: an app per test on a fresh database.

Every database test runs on SQLite and, when CASELOOM_TEST_POSTGRES_URL is set, on
PostgreSQL too. A template database is built once per worker (schema and a small demo
set) and copied for each test: a file copy on SQLite; on PostgreSQL a copy that the test
before used and that was put back as the template has it (pg_reuse), since making a copy
there costs half a second, most of it the kernel writing the catalogs' files.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import gc
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

import pg_reuse
from caseloom import database
from caseloom.bootstrap import initialise
from caseloom.config import Config
from caseloom.definitions import load_folder
from caseloom.runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent
DEFINITIONS = ROOT / "definitions"
POSTGRES_URL = os.environ.get("CASELOOM_TEST_POSTGRES_URL")
DEMO_ACCOUNTS = 6

PASSWORDS = {"admin": "admin", "agent": "agent", "manager": "manager", "mim": "mim", "author": "author", "monitor": "monitor",
             "customer": "customer", "customer_admin": "customer_admin", "consumer": "consumer"}

BACKENDS = ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])

# Every test builds an app and runtimes (tens of thousands of objects in reference cycles), so the
# collector's default thresholds ran a full collection every few tests, each one scanning all that the
# imports and the definitions left: a quarter of a test file's time. Collected less often, with what
# exists once the tests are collected set aside for good, a file runs 25 % faster for 15 % more memory.
gc.set_threshold(50_000, 20, 20)


# The files that take longest, longest first (from a CI run's per-test times). `make test` runs with
# `--dist loadfile --no-loadscope-reorder`: a worker takes the next file when it has two tests left, so
# the long files start early and the run does not end with one worker on a long file while the other
# has nothing left. (xdist's own order, most tests first, put the bench's five long tests last: a
# minute of one idle core.) The other files follow in alphabetical order.
LONGEST_FIRST = [
    "test_openapi_fuzz", "test_bench", "test_serving", "test_axe", "test_sla", "test_browser", "test_job_recovery",
    "test_definitions_browser", "test_soak", "test_bad_input", "test_member_lists_generic", "test_csp_browser",
    "test_recipients", "test_browser_references", "test_migrate", "test_browser_mim_story", "test_field_flags",
    "test_definitions_api", "test_definitions_ui", "test_browser_dashboards", "test_second_app", "test_reports",
    "test_browser_lists", "test_records", "test_job_slices", "test_report_builder", "test_dotwalk_access", "test_auth",
    "test_browser_slas", "test_email_inbound", "test_similar",
]


@pytest.hookimpl(trylast=True)  # after pytest's own ordering of a file's tests by their fixtures' parameters
def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: a file's own order is kept


def pytest_collection_finish(session):
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session")
def definitions():
    return load_folder(DEFINITIONS)


def _worker() -> str:
    """A name unique to this test process (xdist worker and pid), for its PostgreSQL databases."""
    return f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{os.getpid()}"


def _pg_admin() -> sa.Engine:
    return sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")


def _pg_url(name: str) -> str:
    return sa.engine.make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)


_POOL: pg_reuse.Pool | None = None
LATE_TEMPLATES: list[str] = []  # templates made during the session (small apps'), dropped at its end


def pg_pool() -> pg_reuse.Pool:
    """This test process's PostgreSQL databases, put back after each test rather than made afresh."""
    global _POOL
    if _POOL is None:
        url = sa.engine.make_url(POSTGRES_URL)
        _POOL = pg_reuse.Pool(url.set(drivername="postgresql", database=None).render_as_string(hide_password=False),
                              url.database, f"caseloom_{_worker()}")
    return _POOL


@pytest.hookimpl(trylast=True)  # after the session's fixtures are torn down
def pytest_sessionfinish(session):
    for prefix in LATE_TEMPLATES:
        drop_templates(prefix)
    if _POOL is not None:
        _POOL.close()
    # pytest's unraisable-exception plugin runs a full collection at unconfigure, after the xdist worker
    # has said it is finished; over a whole run's heap that took more than the 5 s execnet gives a
    # finished worker, which then interrupted it (a KeyboardInterrupt in a weakref callback, reported
    # as a warning at the end of the run). Collected here, while the session is still the worker's, and
    # what is left frozen, that last collection has only what unconfigure itself lets go.
    gc.collect()
    gc.freeze()


@contextlib.contextmanager
def pg_database(template: str | None = None) -> Iterator[str]:
    """The URL of a PostgreSQL database for one test: a copy of `template`, or an empty one."""
    name = pg_pool().acquire(template)
    try:
        yield _pg_url(name)
    finally:
        pg_pool().release(name)


SETTLE_SECONDS = 30


def settle_sqlite(path: Path) -> None:
    """Move everything in a SQLite database's WAL into its file, for tests that copy the file alone.
    Closing the last connection does it too, but a connection left open (an engine not yet
    collected) keeps committed rows in the WAL, and a copy of the file then lacks them. A checkpoint
    running at that moment (the platform's own background checkpointer, just after the last commit)
    makes this one answer busy having done nothing, and a copy then lacked every table: it is tried
    again until it is done."""
    deadline = time.monotonic() + SETTLE_SECONDS
    with contextlib.closing(sqlite3.connect(path)) as conn:
        while True:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{path}: its WAL could not be checkpointed within {SETTLE_SECONDS} s")
            time.sleep(0.05)


def build_template(base: Path, prefix: str, backend: str, initialise_at: Callable[[str], None]) -> str:
    """One initialised database of `backend` for this worker, named `prefix`: `initialise_at(url)` fills it."""
    if backend == "sqlite":
        url = f"sqlite:///{base}/{prefix}.db"
    else:
        name = f"{prefix}_tpl_{_worker()}"
        pg_pool().forget(name)
        pg_pool().drop(name)
        pg_pool().make(name)
        url = _pg_url(name)
    initialise_at(url)
    if backend == "sqlite":
        settle_sqlite(base / f"{prefix}.db")
    return url


def build_templates(base: Path, prefix: str, initialise_at: Callable[[str], None]) -> dict[str, str]:
    """One initialised database per backend and worker, named `prefix`: `initialise_at(url)` fills it."""
    return {backend: build_template(base, prefix, backend, initialise_at) for backend in BACKENDS}


def drop_templates(prefix: str) -> None:
    if POSTGRES_URL:
        pg_pool().forget(f"{prefix}_tpl_{_worker()}")
        pg_pool().drop(f"{prefix}_tpl_{_worker()}")


def database_copy(templates: dict[str, str], backend: str, tmp_path: Path, prefix: str) -> Iterator[str]:
    """A fresh copy of a template database for one test (a file copy, or on PostgreSQL a copy put
    back as the template has it after the test before: see pg_reuse)."""
    if backend == "sqlite":
        target = tmp_path / f"{prefix}.db"
        shutil.copyfile(templates["sqlite"][len("sqlite:///"):], target)
        yield f"sqlite:///{target}"
        return
    with pg_database(sa.engine.make_url(templates["postgresql"]).database) as url:
        yield url


@pytest.fixture(scope="session")
def templates(tmp_path_factory, definitions):
    """One initialised database per backend and worker: schema, properties and small demo data."""
    base = tmp_path_factory.mktemp("templates")

    def initialise_at(url: str) -> None:
        config = Config(database_url=url, definitions=str(DEFINITIONS), instance=str(base / "instance"))
        runtime = Runtime(config, definitions)
        initialise(config, definitions, demo=True, accounts=DEMO_ACCOUNTS, runtime=runtime)
        runtime.engine.dispose()

    yield build_templates(base, "caseloom", initialise_at)
    drop_templates("caseloom")


@pytest.fixture(params=BACKENDS)
def database_url(request, templates, tmp_path):
    """A fresh copy of the template database for one test."""
    yield from database_copy(templates, request.param, tmp_path, "caseloom")


@pytest.fixture
def config(database_url, tmp_path):
    return Config(database_url=database_url, definitions=str(DEFINITIONS), scripts=str(ROOT / "scripts"),
                  instance=str(tmp_path / "instance"), ui=str(ROOT / "ui"), secret_key="test-secret",
                  queue=f"sqlite:///{tmp_path / 'queue.db'}")  # the test's own queue, never the working directory's


@pytest.fixture
def definitions_copy(tmp_path) -> Path:
    """A copy of the shipped definitions folder, for tests that change definitions (and their files)."""
    target = tmp_path / "definitions"
    shutil.copytree(DEFINITIONS, target)
    return target


@pytest.fixture
def runtime(config, definitions):
    rt = Runtime(config, definitions)
    yield rt
    rt.engine.dispose()


@pytest.fixture
def app(config, definitions):
    from caseloom.web import create_app, db

    app = create_app(config, definitions, testing=True)
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def make_app(config, definitions):
    """Apps with some settings changed: `make_app(proxies=1).test_client()`."""
    from caseloom.web import create_app, db

    made = []

    def make(**changes):
        app = create_app(dataclasses.replace(config, **changes), definitions, testing=True)
        made.append(app)
        return app

    yield make
    for app in made:
        with app.app_context():
            db.engine.dispose()


def errors_after_edit(folder: Path, path: str, old: str, new: str) -> list[str]:
    """The located errors ("file:line:col: message") of a definitions folder once `old` in its file `path`
    is replaced by `new` (which must be there); the folder must no longer load."""
    from caseloom.definitions import DefinitionErrors

    target = folder / path
    text = target.read_text()
    assert old in text, f"{old!r} is not in {path}"
    target.write_text(text.replace(old, new, 1))
    with pytest.raises(DefinitionErrors) as caught:
        load_folder(folder)
    return [f"{e.location}: {e.message}" for e in caught.value.errors]


def basic(user: str, password: str | None = None) -> dict:
    token = base64.b64encode(f"{user}:{password or PASSWORDS[user]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class Api:
    """A small client for the Table API as one user: `api.get("/api/now/table/x")`."""

    def __init__(self, client, user: str):
        self.client, self.headers = client, basic(user)

    def get(self, path, **kw):
        return self.client.get(path, headers=self.headers, **kw)

    def post(self, path, json=None, **kw):
        return self.client.post(path, json=json, headers=self.headers, **kw)

    def patch(self, path, json=None, **kw):
        return self.client.patch(path, json=json, headers=self.headers, **kw)

    def put(self, path, json=None, **kw):
        return self.client.put(path, json=json, headers=self.headers, **kw)

    def delete(self, path, **kw):
        return self.client.delete(path, headers=self.headers, **kw)


@pytest.fixture
def as_user(client):
    """`as_user("agent").get(...)`: the Table API as a demo user."""
    return lambda user: Api(client, user)


class Mailbox:
    """An aiosmtpd handler that keeps every message it accepts; addresses in `refuse` get a 550."""

    def __init__(self):
        self.messages: list[tuple[str, list[str], object]] = []  # (MAIL FROM, RCPT TOs, parsed message)
        self.refuse: set[str] = set()
        self.port = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        import email

        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), email.message_from_bytes(envelope.content)))
        return "250 Message accepted for delivery"

    def subjects(self) -> list[str]:
        return sorted(str(message["Subject"]) for _, _, message in self.messages)


# A long job's units of work on SQLite, in a process of its own as `caseloom worker` runs them: each
# holds the write lock for a while and the next begins as soon as it commits.
LONG_JOB = """
import sys, time
from caseloom.database import WRITE_LOCK, make_engine
url, unit, limit = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
with make_engine(url).connect() as conn:
    conn.execution_options(**{WRITE_LOCK: True})
    units, end = 0, time.monotonic() + limit
    transaction = conn.begin()
    print("begun", flush=True)
    while time.monotonic() < end:
        time.sleep(unit)
        transaction.commit()
        units += 1
        transaction = conn.begin()
    transaction.commit()
print(units, flush=True)
"""


@contextlib.contextmanager
def long_job_on_sqlite(url: str, unit: float = 0.3, limit: float = 20.0) -> Iterator[Callable[[], bool]]:
    """Units of `unit` seconds, one after the other, for `limit` seconds at most; yields whether
    they still run."""
    import subprocess
    import sys

    job = subprocess.Popen([sys.executable, "-c", LONG_JOB, url, str(unit), str(limit)], stdout=subprocess.PIPE, text=True)
    try:
        assert job.stdout.readline().strip() == "begun"
        yield lambda: job.poll() is None
    finally:
        job.kill()
        job.wait()
        job.stdout.close()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mailbox():
    """A real SMTP server on 127.0.0.1 (aiosmtpd) that captures what it is sent."""
    from aiosmtpd.controller import Controller

    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    box.port = controller.port
    yield box
    controller.stop()


def ui_sign_in(client, user: str, password: str | None = None) -> None:
    """A browser session for `user` on the test client (the sign-in form with its CSRF token)."""
    import re

    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    answer = client.post("/login", data={"user_name": user, "user_password": password or PASSWORDS[user],
                                         "csrf_token": token})
    assert answer.status_code == 302, answer.get_data(as_text=True)


def form_token(client, url: str) -> str:
    """The CSRF token of a page, for a form post as the browser would make it."""
    import re

    return re.search(r'name="csrf-token" content="([^"]+)"', client.get(url).get_data(as_text=True)).group(1)


@pytest.fixture
def table_held(database_url):
    """On PostgreSQL, another transaction left open on a table until `release()`: `read(table)` reads it
    (its ACCESS SHARE lock held), `write(table)` inserts a row of it (a writer, its ROW EXCLUSIVE lock
    held). `waiting()` says whether an ALTER TABLE waits for a lock, `sql(...)` runs one statement in
    autocommit, `index(name)` says whether an index is 'valid', 'invalid' or None (none)."""
    if database_url.startswith("sqlite"):
        pytest.skip("a PostgreSQL matter: on SQLite a schema change holds the write lock, and readers go on")
    engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    held = engine.connect()
    other = engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    class Held:
        def _begin(self) -> None:
            held.begin()
            held.exec_driver_sql("SET idle_in_transaction_session_timeout = '60s'")  # a failing test ends it

        def read(self, table: str) -> None:
            self._begin()
            held.exec_driver_sql(f'SELECT count(*) FROM "{table}"')

        def write(self, table: str) -> None:
            self._begin()
            held.exec_driver_sql(f"INSERT INTO \"{table}\" (sys_id, sys_class_name, sys_created_on, sys_updated_on, "
                                 f"sys_mod_count, name) VALUES ('{'a' * 32}', '{table}', now(), now(), 0, 'Held')")

        def release(self) -> None:
            held.rollback()

        def sql(self, statement: str):
            return other.exec_driver_sql(statement)

        def waiting(self) -> bool:
            return bool(self.sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                 "AND query ILIKE 'ALTER TABLE%%'").scalar())

        def index(self, name: str) -> str | None:
            valid = self.sql(f"SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                             f"WHERE c.relname = '{name}'").scalar()
            return None if valid is None else "valid" if valid else "invalid"

    yield Held()
    held.close()
    other.close()
    engine.dispose()


@contextlib.contextmanager
def database_held(app, database_url: str, monkeypatch, table: str, sys_id: str | None = None):
    """The server's requests wait 0.2 s for a lock (their pool opened again), while another connection
    holds one: on SQLite the write lock; on PostgreSQL `sys_id`'s row of `table` (FOR UPDATE), or the
    whole table against writes (SHARE ROW EXCLUSIVE: reads go on, inserts wait)."""
    engine = app.extensions["caseloom"].engine
    if database_url.startswith("sqlite"):
        engine.dispose()
        sa.event.listen(engine, "connect", lambda raw, record: raw.execute("PRAGMA busy_timeout=200"))
        holder = sqlite3.connect(database_url[len("sqlite:///"):], isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        return
    monkeypatch.setattr(database, "REQUEST_LOCK_WAIT_MS", 200)  # the server's own setting, shortened
    engine.dispose()
    with sa.create_engine(database_url, poolclass=sa.pool.NullPool).connect() as holder:
        holder.begin()
        # should a request wait regardless (no lock wait limit), the server ends the holder in 10 s
        holder.exec_driver_sql("SET idle_in_transaction_session_timeout = '10s'")
        if sys_id:
            holder.exec_driver_sql(f'SELECT sys_id FROM "{table}" WHERE sys_id = %(s)s FOR UPDATE', {"s": sys_id})
        else:
            holder.exec_driver_sql(f'LOCK TABLE "{table}" IN SHARE ROW EXCLUSIVE MODE')
        try:
            yield
        finally:
            with contextlib.suppress(sa.exc.DBAPIError):  # ended by the server: its lock is gone anyway
                holder.rollback()


def sqlite_plans(engine: sa.Engine, table: str, run: Callable[[], object]) -> list[tuple[str, str]]:
    """Each SELECT reading `table` that `run()` executes on `engine` (SQLite), with its plan: EXPLAIN QUERY
    PLAN's steps joined by " | ", as the database would plan it now (with the statistics it has)."""
    statements: list[tuple[str, object]] = []

    def keep(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().startswith("SELECT") and f"FROM {table}" in statement:
            statements.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", keep)
    try:
        run()
    finally:
        sa.event.remove(engine, "before_cursor_execute", keep)
    with engine.connect() as conn:
        return [(statement, " | ".join(row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}",
                                                                               parameters)))
                for statement, parameters in statements]
