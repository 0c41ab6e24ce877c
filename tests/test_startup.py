"""Starting a server: it refuses to start without its UI templates (CASELOOM_UI), saying so in one
line; and its SQLite set-up (pragmas, BEGIN, the WAL checkpointer) is on its own engines only."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from dataclasses import replace

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy import event

from caseloom import database
from caseloom.cli import main
from caseloom.database import (
    SQLITE_CACHE_KB,
    SQLITE_JOB_CACHE_KB,
    SQLITE_LISTENERS,
    Checkpointer,
    job_cache,
    make_engine,
    worker_engine,
)
from conftest import DEFINITIONS, ROOT

# -- CASELOOM_UI --------------------------------------------------------------------------------


def _no_templates(tmp_path):
    return tmp_path / "nowhere"


def _empty_templates(tmp_path):
    (tmp_path / "ui" / "templates").mkdir(parents=True)
    return tmp_path / "ui"


def _a_file(tmp_path):
    (tmp_path / "ui").write_text("not a folder")
    return tmp_path / "ui"


@pytest.mark.parametrize("make_ui", [_no_templates, _empty_templates, _a_file])
def test_an_app_without_its_templates_refuses_to_start_naming_the_folder_and_the_variable(config, tmp_path, make_ui):
    from caseloom.web import StartupError, create_app

    ui = make_ui(tmp_path)
    with pytest.raises(StartupError) as info:
        create_app(replace(config, ui=str(ui)), testing=True)
    assert info.value.message == (
        f"CASELOOM_UI={str(ui)!r}: no UI templates in {ui / 'templates'} (expected base.html there); set "
        "CASELOOM_UI to the folder that holds templates/ and static/ (the repository's ui/)")


def test_caseloom_serve_refuses_to_start_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default, ui, is a folder of the working directory: none here
    monkeypatch.setenv("CASELOOM_DEFINITIONS", str(DEFINITIONS))
    monkeypatch.setenv("CASELOOM_DATABASE_URL", f"sqlite:///{tmp_path / 'serve.db'}")
    monkeypatch.setenv("CASELOOM_QUEUE", f"sqlite:///{tmp_path / 'queue.db'}")
    monkeypatch.setenv("CASELOOM_INSTANCE", str(tmp_path / "instance"))
    monkeypatch.delenv("CASELOOM_UI", raising=False)
    result = CliRunner().invoke(main, ["serve", "--port", "1"])
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [
        f"Error: CASELOOM_UI='ui': no UI templates in {tmp_path / 'ui' / 'templates'} (expected base.html there); "
        "set CASELOOM_UI to the folder that holds templates/ and static/ (the repository's ui/)"]


def test_an_app_serves_pages_from_the_ui_folder_it_is_given(config, tmp_path):
    from caseloom.web import create_app, db

    shutil.copytree(ROOT / "ui" / "templates", tmp_path / "elsewhere" / "templates")
    app = create_app(replace(config, ui=str(tmp_path / "elsewhere")), testing=True)
    try:
        page = app.test_client().get("/login")
        assert page.status_code == 200 and 'name="user_password"' in page.get_data(as_text=True)
    finally:
        with app.app_context():
            db.engine.dispose()


# -- SQLite listeners on Caseloom's engines only -----------------------------------------------------


def _settings(engine: sa.Engine) -> dict:
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        return {"busy_timeout": raw.execute("PRAGMA busy_timeout").fetchone()[0],
                "cache_size": raw.execute("PRAGMA cache_size").fetchone()[0],
                "isolation_level": raw.isolation_level}


OURS = {"busy_timeout": 30000, "cache_size": -SQLITE_CACHE_KB, "isolation_level": None}


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///{tmp}/foreign.db"])
def test_a_foreign_sqlite_engine_keeps_sqlites_defaults(tmp_path, url):
    ours = make_engine(f"sqlite:///{tmp_path}/ours.db")
    foreign = sa.create_engine(url.format(tmp=tmp_path))
    try:
        assert _settings(ours) == OURS
        with contextlib.closing(sqlite3.connect(":memory:")) as plain:  # what SQLite and pysqlite give anyone
            defaults = {"busy_timeout": 5000, "cache_size": plain.execute("PRAGMA cache_size").fetchone()[0],
                        "isolation_level": ""}
        assert _settings(foreign) == defaults
        for name, listener in SQLITE_LISTENERS:
            assert event.contains(ours, name, listener) and not event.contains(foreign, name, listener)
            assert not event.contains(sa.Engine, name, listener)
    finally:
        ours.dispose()
        foreign.dispose()


def test_a_workers_connections_keep_a_jobs_page_cache_and_a_job_gives_it_back(tmp_path):
    server, worker = make_engine(f"sqlite:///{tmp_path}/db.db"), worker_engine(f"sqlite:///{tmp_path}/db.db", 4)
    try:
        assert _settings(server) == OURS
        assert _settings(worker) == {**OURS, "cache_size": -SQLITE_JOB_CACHE_KB}
        for engine, own in ((server, SQLITE_CACHE_KB), (worker, SQLITE_JOB_CACHE_KB)):
            with engine.connect() as conn:
                raw = conn.connection.dbapi_connection
                with job_cache(conn, 8_192):  # an export's smaller cache, while it reads
                    assert raw.execute("PRAGMA cache_size").fetchone()[0] == -8_192
                assert raw.execute("PRAGMA cache_size").fetchone()[0] == -own  # the engine's own again
    finally:
        server.dispose()
        worker.dispose()


def test_a_foreign_engines_commit_starts_no_checkpointer(tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(Checkpointer, "after_commit", classmethod(lambda cls, path: started.append(path)))
    foreign = sa.create_engine(f"sqlite:///{tmp_path}/foreign.db")
    ours = make_engine(f"sqlite:///{tmp_path}/ours.db")
    try:
        for engine in (foreign, ours):
            with engine.begin() as conn:
                conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        assert started == [str(tmp_path / "ours.db")]
    finally:
        foreign.dispose()
        ours.dispose()


def test_the_web_apps_engine_is_set_up_like_the_cli_and_workers(app):
    from caseloom.web import db

    if app.extensions["caseloom"].engine.dialect.name != "sqlite":
        pytest.skip("SQLite's set-up; PostgreSQL's engines need none")
    with app.app_context():
        assert _settings(db.engine) == OURS
    assert database.prepare_engine(app.extensions["caseloom"].engine) is app.extensions["caseloom"].engine


@pytest.mark.parametrize("command", [["validate"], ["worker"], ["job", "cancel", "x" * 32]], ids=" ".join)
def test_a_bad_setting_stops_every_command_in_one_line(command, monkeypatch):
    """CASELOOM_JOB_SLICE_ROWS=5 printed a traceback in worker, serve and validate: every setting is
    now checked once, before any command runs."""
    from click.testing import CliRunner

    from caseloom.cli import main

    monkeypatch.setenv("CASELOOM_JOB_SLICE_ROWS", "5")
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 1
    assert result.output == "caseloom: CASELOOM_JOB_SLICE_ROWS='5': expected a whole number from 100 to 10000000\n"


FIX_THE_PATH = "create it, or correct the path (sqlite:///relative/path/queue.db, sqlite:////absolute/path/queue.db)"
EXPECTED_URL = "expected sqlite:///path/to/queue.db or redis://host:port/db"


@pytest.mark.parametrize("queue, said", [
    ("sqlite:///{tmp}/no-such-folder/queue.db",
     "CASELOOM_QUEUE='sqlite:///{tmp}/no-such-folder/queue.db': the folder {tmp}/no-such-folder does not exist; "
     + FIX_THE_PATH),
    ("sqlite:///instanse/queue.db",  # relative to the working directory
     "CASELOOM_QUEUE='sqlite:///instanse/queue.db': the folder {tmp}/instanse does not exist; " + FIX_THE_PATH),
    ("sqlite:/{tmp}/queue.db", "CASELOOM_QUEUE='sqlite:/{tmp}/queue.db': " + EXPECTED_URL),  # a slash short
    ("redis:/127.0.0.1:6379/0", "CASELOOM_QUEUE='redis:/127.0.0.1:6379/0': " + EXPECTED_URL),
    ("postgresql://queue:hunter2@db/queue", "CASELOOM_QUEUE='postgresql://queue:***@db/queue': " + EXPECTED_URL),
    ("postgresql://queue:hunter2@db:54x2/queue", "CASELOOM_QUEUE='postgresql://***@db:54x2/queue': " + EXPECTED_URL),
    ("sqlite:///:memory:", "CASELOOM_QUEUE='sqlite:///:memory:': " + EXPECTED_URL),
])
def test_a_mistyped_queue_stops_every_command_in_one_line_and_makes_nothing(tmp_path, monkeypatch, queue, said):
    """A queue file in a folder that does not exist was made silently (the folder and all), and a URL of
    no kind the queue takes failed only when a job was queued: both are refused at once, naming
    CASELOOM_QUEUE (never a password in it) and the folder."""
    tmp = tmp_path.resolve()
    monkeypatch.chdir(tmp)
    monkeypatch.setenv("CASELOOM_QUEUE", queue.format(tmp=tmp))

    result = CliRunner().invoke(main, ["validate", str(DEFINITIONS)])

    assert result.exit_code == 1
    assert result.output == f"caseloom: {said.format(tmp=tmp)}\n"
    assert sorted(tmp.iterdir()) == []


@pytest.mark.parametrize("queue", [None, "", "sqlite:///{tmp}/queue.db", "sqlite:///queue.db", "redis://127.0.0.1:6390/3",
                                   "rediss://:secret@cache.example:6380/0", "unix:///run/redis.sock?db=1"])
def test_a_queue_in_a_folder_that_exists_or_on_redis_or_the_default_is_taken(tmp_path, monkeypatch, queue):
    from caseloom.config import Config

    monkeypatch.chdir(tmp_path)
    if queue is None:
        monkeypatch.delenv("CASELOOM_QUEUE", raising=False)
    else:
        monkeypatch.setenv("CASELOOM_QUEUE", queue.format(tmp=tmp_path))
    assert Config.from_env().queue == (queue.format(tmp=tmp_path) if queue else "sqlite:///instance/queue.db")


def test_a_port_out_of_range_is_refused():
    from click.testing import CliRunner

    from caseloom.cli import main

    result = CliRunner().invoke(main, ["serve", "--dev", "--port", "70000"])
    assert result.exit_code == 2 and "'--port': 70000 is not in the range 1<=x<=65535" in result.output


@pytest.mark.parametrize("instance", [None, "{tmp}/srv/instance"])
def test_a_queue_in_the_instance_folder_not_made_yet_is_taken(tmp_path, monkeypatch, instance):
    """The instance folder is the platform's to make (at the first init or serve): a queue file in it
    is no mistyped path, even before it exists."""
    from caseloom.config import Config

    monkeypatch.chdir(tmp_path)
    if instance is None:
        monkeypatch.delenv("CASELOOM_INSTANCE", raising=False)
        queue = "sqlite:///instance/queue.db"
    else:
        monkeypatch.setenv("CASELOOM_INSTANCE", instance.format(tmp=tmp_path))
        queue = f"sqlite:///{instance.format(tmp=tmp_path)}/queue.db"
    monkeypatch.setenv("CASELOOM_QUEUE", queue)
    assert Config.from_env().queue == queue and not (tmp_path / "instance").exists()
