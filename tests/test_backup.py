"""`caseloom backup FILE` and `caseloom restore FILE`: a consistent copy that brings the records back.

Every test runs on SQLite and, with CASELOOM_TEST_POSTGRES_URL, on PostgreSQL (real pg_dump and
pg_restore). A bad input exits 1 with a message naming the file, and changes nothing.
"""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from caseloom import backup as backup_module
from caseloom.backup import backup
from caseloom.cli import main
from caseloom.query import parse_encoded
from conftest import DEFINITIONS, POSTGRES_URL

CASES = "sn_customerservice_case"


@pytest.fixture
def cli(database_url, monkeypatch):
    """`caseloom ...` against the test's database."""
    monkeypatch.setenv("CASELOOM_DATABASE_URL", database_url)
    monkeypatch.setenv("CASELOOM_DEFINITIONS", str(DEFINITIONS))
    runner = CliRunner()
    return lambda *args: runner.invoke(main, [str(arg) for arg in args])


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def backup_file(folder: Path, url: str) -> Path:
    return folder / ("caseloom-backup.db" if is_sqlite(url) else "caseloom-backup.dump")


def a_case(runtime) -> str:
    with runtime.transaction() as service:
        return service.query(CASES, parse_encoded("ORDERBYnumber"), ["sys_id"], 1)[0]["sys_id"]


def description(runtime, sys_id: str) -> str | None:
    """The case's short description as the record service shows it; None when there is no such case."""
    with runtime.transaction() as service:
        record = service.get(CASES, sys_id)
    return None if record is None else record["short_description"]


def describe(runtime, sys_id: str, text: str) -> None:
    with runtime.transaction() as service:
        service.update(CASES, sys_id, {"short_description": text})


def tables(runtime) -> set[str]:
    with runtime.engine.connect() as conn:
        return set(sa.inspect(conn).get_table_names())


def parts(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.rglob("*.part"))


# -- a backup brings the records back -----------------------------------------------------------


def test_restore_brings_back_the_records_the_backup_held(cli, runtime, database_url, tmp_path):
    case = a_case(runtime)
    before = description(runtime, case)
    file = backup_file(tmp_path, database_url)

    made = cli("backup", file)
    assert made.exit_code == 0, made.output
    assert made.output.startswith(f"wrote {file} (") and "bytes), a backup of " in made.output
    assert file.stat().st_size > 0 and parts(tmp_path) == []
    assert file.stat().st_mode & 0o777 == 0o600  # it holds every user's password hash

    describe(runtime, case, "Changed after the backup")
    with runtime.transaction() as service:
        later = service.insert(CASES, {"short_description": "Filed after the backup"})["sys_id"]
    with runtime.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE scratch_after_backup (x integer)")

    restored = cli("restore", file)
    assert restored.exit_code == 0, restored.output
    assert restored.output.startswith("restored ") and f"from {file} (" in restored.output
    assert description(runtime, case) == before
    assert description(runtime, later) is None
    assert "scratch_after_backup" not in tables(runtime) and "sys_meta" in tables(runtime)


def test_messages_show_the_database_without_its_password(cli, database_url, tmp_path):
    password = sa.engine.make_url(database_url).password
    file = backup_file(tmp_path, database_url)
    outputs = cli("backup", file).output + cli("restore", file).output
    assert "a backup of " in outputs and "restored " in outputs
    if password:
        assert f":{password}@" not in outputs and ":***@" in outputs


def test_a_backup_beside_an_open_write_transaction_holds_only_committed_data(cli, runtime, database_url, tmp_path):
    case = a_case(runtime)
    before = description(runtime, case)
    file = backup_file(tmp_path, database_url)
    with runtime.transaction(write_lock=True) as service:  # SQLite: holds the write lock throughout
        service.update(CASES, case, {"short_description": "Written while the backup ran"})
        made = cli("backup", file)
    assert made.exit_code == 0, made.output
    assert description(runtime, case) == "Written while the backup ran"  # the writer was not disturbed

    assert cli("restore", file).exit_code == 0
    assert description(runtime, case) == before


# -- a bad file to restore: exit 1, the file named, the database as it was --------------------------


def missing(tmp_path: Path, url: str, templates: dict) -> Path:
    return tmp_path / "no-such-backup.db"


def text_file(tmp_path: Path, url: str, templates: dict) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("not a backup\n" * 50)
    return path


def other_kind(tmp_path: Path, url: str, templates: dict) -> Path:
    """A real backup of the other kind of database: a SQLite file for PostgreSQL, a pg_dump archive for SQLite."""
    if not is_sqlite(url):
        return Path(shutil.copyfile(templates["sqlite"][len("sqlite:///"):], tmp_path / "sqlite-backup.db"))
    if not POSTGRES_URL:
        pytest.skip("a pg_dump archive needs CASELOOM_TEST_POSTGRES_URL")
    return backup(templates["postgresql"], tmp_path / "postgres-backup.dump").file


def not_caseloom(tmp_path: Path, url: str, templates: dict) -> Path:
    """A backup of the right kind of some other database (for PostgreSQL: the server's maintenance database)."""
    if not is_sqlite(url):  # pg_dump's own archive of it (`caseloom backup` refuses a database not Caseloom's)
        path = tmp_path / "maintenance.dump"
        backup_module.database_for(POSTGRES_URL).dump(path)
        return path
    path = tmp_path / "queue.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE task (id integer primary key, data blob)")
        conn.commit()
    return path


def truncated(tmp_path: Path, url: str, templates: dict) -> Path:
    """A backup of this very database cut off at 90% (a disk that filled up, a copy that stopped)."""
    whole = backup(url, backup_file(tmp_path, url)).file.read_bytes()
    path = tmp_path / ("cut-" + backup_file(tmp_path, url).name)
    path.write_bytes(whole[: len(whole) * 9 // 10])
    return path


BAD_RESTORES = [
    (missing, "no such file"),
    (text_file, "is neither a SQLite database nor a pg_dump archive"),
    (other_kind, "needs a"),
    (not_caseloom, "not a Caseloom one"),
    (truncated, ""),  # SQLite: "malformed"; pg_restore: "end of file"
]


@pytest.mark.parametrize(("make", "says"), BAD_RESTORES, ids=[make.__name__ for make, _ in BAD_RESTORES])
def test_a_bad_file_is_refused_and_the_database_stays_as_it_was(cli, runtime, database_url, templates, tmp_path,
                                                                make, says):
    case = a_case(runtime)
    file = make(tmp_path, database_url, templates)
    describe(runtime, case, "Changed since any backup")

    result = cli("restore", file)
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"caseloom restore: {file}") and says in result.output
    assert description(runtime, case) == "Changed since any backup"
    assert "sys_meta" in tables(runtime)


def test_a_restore_under_a_running_worker_is_refused_unless_forced(cli, runtime, database_url, tmp_path):
    """A restore replaces everything: with a server or worker seen on the database (its sys_worker row
    is fresh), it is refused, naming it; --force restores all the same. A worker gone long ago is no bar."""
    file = backup_file(tmp_path, database_url)
    assert cli("backup", file).exit_code == 0
    from caseloom.records import now

    table = sa.table("sys_worker", sa.column("id"), sa.column("node"), sa.column("pid"), sa.column("threads"),
                     sa.column("started_on"), sa.column("seen_on"))
    with runtime.engine.begin() as conn:
        conn.execute(sa.insert(table).values(id="w" * 32, node="app-1", pid=4242, threads=2, started_on=now(),
                                             seen_on=now()))
    refused = cli("restore", file)
    assert refused.exit_code == 1
    assert refused.output.startswith("caseloom restore: the database is in use (app-1 pid 4242, seen ")
    assert "--force" in refused.output
    forced = cli("restore", "--force", file)
    assert forced.exit_code == 0, forced.output


def test_a_restore_forgets_the_workers_of_the_database_the_backup_came_from(cli, runtime, database_url, tmp_path):
    """The backup's sys_worker rows are another deployment's processes: after a restore /health and
    the next restore's check see none of them."""
    from caseloom.records import now

    table = sa.table("sys_worker", sa.column("id"), sa.column("node"), sa.column("pid"), sa.column("threads"),
                     sa.column("started_on"), sa.column("seen_on"))
    with runtime.engine.begin() as conn:
        conn.execute(sa.insert(table).values(id="o" * 32, node="old-app", pid=4242, threads=2, started_on=now(),
                                             seen_on=now()))
    file = backup_file(tmp_path, database_url)
    assert cli("backup", file).exit_code == 0
    with runtime.engine.begin() as conn:
        conn.execute(sa.delete(table))
    assert cli("restore", file).exit_code == 0
    with runtime.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 0
    again = cli("restore", file)
    assert again.exit_code == 0, again.output


def test_restore_help_says_it_replaces_everything(cli):
    assert "replace everything" in cli("restore", "--help").output.lower()


# -- a backup that cannot be made: exit 1, and no FILE or FILE.part ----------------------------------


def sqlite_file_missing(tmp_path: Path, monkeypatch) -> str:
    return f"sqlite:///{tmp_path / 'never-initialised.db'}"


def sqlite_file_of_text(tmp_path: Path, monkeypatch) -> str:
    path = tmp_path / "caseloom.db"
    path.write_text("this is not a database\n" * 200)
    return f"sqlite:///{path}"


def unknown_kind(tmp_path: Path, monkeypatch) -> str:
    return "mysql://caseloom:s3cret-pw@db.example/caseloom"


def postgres_database_missing(tmp_path: Path, monkeypatch) -> str:
    if not POSTGRES_URL:
        pytest.skip("needs CASELOOM_TEST_POSTGRES_URL")
    return sa.engine.make_url(POSTGRES_URL).set(database="caseloom_no_such_database").render_as_string(False)


def pg_dump_not_installed(tmp_path: Path, monkeypatch) -> str:
    """No pg_dump on PATH nor where Debian installs it: both are empty folders here."""
    monkeypatch.setattr(backup_module, "PG_BIN_DIRS", tmp_path / "no-postgresql")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    return "postgresql+psycopg://caseloom:s3cret-pw@127.0.0.1:5432/caseloom"


def sqlite_file_not_caseloom(tmp_path: Path, monkeypatch) -> str:
    """A SQLite database `caseloom init` never ran on (a CASELOOM_DATABASE_URL pointing at the wrong file)."""
    path = tmp_path / "other.db"
    with closing(sqlite3.connect(path)) as other:
        other.execute("CREATE TABLE notes (x text)")
    return f"sqlite:///{path}"


BAD_BACKUPS = [
    (sqlite_file_missing, "no database at"),
    (sqlite_file_not_caseloom, "is not a Caseloom database (it has no sys_meta table): has `caseloom init` been run"),
    (sqlite_file_of_text, "file is not a database"),
    (unknown_kind, "know SQLite and PostgreSQL databases, not mysql"),
    (postgres_database_missing, 'database "caseloom_no_such_database" does not exist'),
    (pg_dump_not_installed, "pg_dump not found on PATH"),
]


@pytest.mark.parametrize(("database", "says"), BAD_BACKUPS, ids=[make.__name__ for make, _ in BAD_BACKUPS])
def test_a_backup_that_fails_leaves_no_file_behind(tmp_path, monkeypatch, database, says):
    url = database(tmp_path, monkeypatch)
    out = tmp_path / "backups"
    out.mkdir()
    result = CliRunner().invoke(main, ["backup", str(out / "today.bak")], env={"CASELOOM_DATABASE_URL": url})
    assert result.exit_code == 1, result.output
    assert result.output.startswith("caseloom backup: ") and says in result.output
    assert "s3cret-pw" not in result.output
    assert list(out.iterdir()) == []  # neither today.bak nor today.bak.part
    if database is sqlite_file_missing:
        assert not (tmp_path / "never-initialised.db").exists()  # a backup never creates the database it copies


def test_a_failed_backup_keeps_the_previous_backup_file(tmp_path):
    previous = tmp_path / "nightly.db"
    previous.write_bytes(b"yesterday's backup")
    result = CliRunner().invoke(main, ["backup", str(previous)],
                                env={"CASELOOM_DATABASE_URL": sqlite_file_of_text(tmp_path, None)})
    assert result.exit_code == 1 and "file is not a database" in result.output
    assert previous.read_bytes() == b"yesterday's backup" and parts(tmp_path) == []


@pytest.mark.parametrize(("target", "says"), [
    ("missing-folder/today.db", "the folder"),
    (".", "is a folder"),
    ("caseloom.db", "is the database itself"),
    ("caseloom.db-wal", "is the database itself"),
])
def test_a_backup_into_a_place_that_cannot_hold_it_is_refused(tmp_path, monkeypatch, target, says):
    monkeypatch.chdir(tmp_path)
    with closing(sqlite3.connect("caseloom.db")) as live:
        live.execute("CREATE TABLE sys_meta (name text primary key, value text)")
        live.execute("INSERT INTO sys_meta VALUES ('kept', 'yes')")
        live.commit()
    result = CliRunner().invoke(main, ["backup", target], env={"CASELOOM_DATABASE_URL": "sqlite:///caseloom.db"})
    assert result.exit_code == 1 and result.output.startswith(f"caseloom backup: {target}") and says in result.output
    assert parts(tmp_path) == []
    with closing(sqlite3.connect("caseloom.db")) as live:
        assert live.execute("SELECT value FROM sys_meta").fetchall() == [("yes",)]


def test_a_restore_under_a_running_server_of_this_instance_is_refused_unless_forced(cli, runtime, database_url,
                                                                                     tmp_path, monkeypatch):
    """A `caseloom serve` on a Redis queue runs no job worker, so no sys_worker row names it: the restore
    sees it by the lock it holds on its instance's metrics folder (on this machine), and names it."""
    import fcntl

    from caseloom.serving import LOCK_FILE, METRICS_FOLDER

    file = backup_file(tmp_path, database_url)
    assert cli("backup", file).exit_code == 0
    instance = tmp_path / "instance"
    (instance / METRICS_FOLDER).mkdir(parents=True)
    (instance / METRICS_FOLDER / LOCK_FILE).touch()
    monkeypatch.setenv("CASELOOM_INSTANCE", str(instance))
    assert cli("restore", file).exit_code == 0  # a server that ran here once, and stopped: no bar
    with open(instance / METRICS_FOLDER / LOCK_FILE, "a") as held:  # as the running server holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        refused = cli("restore", file)
        assert refused.exit_code == 1
        assert refused.output.startswith(f"caseloom restore: the database is in use (a `caseloom serve` of the "
                                         f"instance folder {instance.resolve()} on this machine)")
        assert cli("restore", "--force", file).exit_code == 0
