"""The `caseloom` command (contract section 4)."""

from __future__ import annotations

import logging
import os
import sys
import time

import click

from .config import Config, log_format
from .definitions import DefinitionErrors, load_folder

log = logging.getLogger("caseloom.cli")


def _load_or_exit(folder: str):
    try:
        return load_folder(folder)
    except DefinitionErrors as exc:
        for error in exc.errors:
            click.echo(str(error), err=True)
        click.echo(f"{len(exc.errors)} error(s) in {folder}", err=True)
        sys.exit(1)


def _log_as_configured(level: int) -> None:
    """Log records of `level` and above in the CASELOOM_LOG_FORMAT format; a bad value stops the command."""
    from .logs import setup

    try:
        setup(log_format(), level)
    except ValueError as exc:
        click.echo(f"caseloom: {exc}", err=True)
        sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Caseloom: a low-code case-management platform."""
    try:
        json_logs = log_format() == "json"
        Config.from_env()  # every CASELOOM_ setting checked once, for every command: one line, never a traceback
    except ValueError as exc:
        click.echo(f"caseloom: {exc}", err=True)
        sys.exit(1)
    if json_logs:  # with text, a command's warnings keep Python's plain form
        _log_as_configured(logging.WARNING)


@main.command()
@click.argument("folder", required=False)
def validate(folder: str | None) -> None:
    """Check every definition file against its schema and cross-references."""
    folder = folder or Config.from_env().definitions
    defs = _load_or_exit(folder)
    for warning in defs.warnings:  # PATH:LINE:COL: warning: ...
        click.echo(f"{warning.location}: warning: {warning.message}", err=True)
    click.echo(f"{folder}: {len(defs.files)} files, {len(defs.tables)} tables, "
               f"{len(defs.properties)} properties, {len(defs.roles)} roles: valid"
               + (f", {len(defs.warnings)} warning(s)" if defs.warnings else ""))


@main.command()
@click.option("--demo", is_flag=True, help="Add the demo users and the rows the definitions' demo generators make.")
@click.option("--scale", type=click.IntRange(min=0), default=None, metavar="N",
              help="Demo scale: a generator with per_scale: k makes k x N rows (default 200). Implies --demo.")
@click.option("--accounts", type=click.IntRange(min=0), default=None, metavar="N", help="The same as --scale.")
@click.option("--force", is_flag=True, help="Apply changes that lose data (dropped fields, narrowed types).")
def init(demo: bool, scale: int | None, accounts: int | None, force: bool) -> None:
    """Create or migrate the database to match the definitions; build the declared lists."""
    from .bootstrap import DEFAULT_SCALE, initialise
    from .demo import DemoError

    if scale is not None and accounts is not None and scale != accounts:
        click.echo(f"caseloom init: --accounts is the same as --scale: give one (got {accounts} and {scale})", err=True)
        sys.exit(1)
    scale = scale if scale is not None else accounts
    config = Config.from_env()
    defs = _load_or_exit(config.definitions)
    started = time.perf_counter()
    try:
        report = initialise(config, defs, force=force, demo=demo or scale is not None,
                            scale=DEFAULT_SCALE if scale is None else scale)
    except DemoError as exc:  # located like a definition error: PATH:LINE:COL: demo: generator ...
        click.echo(str(exc), err=True)
        sys.exit(1)
    except Exception as exc:  # a refused migration, a list that cannot be built, a database error: say it, exit 1
        click.echo(f"caseloom init: {exc}", err=True)
        sys.exit(1)
    for line in report.lines():
        click.echo(line)
    click.echo(f"database ready in {time.perf_counter() - started:.1f}s: {config.database_url}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Server processes (gunicorn workers); each opens its own database pool.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Threads per server process: 1 is gunicorn's sync worker (a request at a time, the "
                   "fastest), more its gthread worker (that many at once).")
@click.option("--timeout", default=60, show_default=True, type=click.IntRange(5, 3600),
              help="Seconds a server process may stay silent before it is replaced.")
@click.option("--dev", is_flag=True, help="Flask's development server in one process (jobs in its threads) instead.")
def serve(host: str, port: int, workers: int, threads: int, timeout: int, dev: bool) -> None:
    """Serve the web UI and the API with gunicorn; with the embedded (SQLite) queue, run background jobs too."""
    from .jobs import is_embedded
    from .web import ui_folder

    if not dev and "CASELOOM_DB_POOL_SIZE" not in os.environ:  # for every server process: one per thread, two spare
        os.environ["CASELOOM_DB_POOL_SIZE"] = str(threads + 2)
    config = Config.from_env()
    _load_or_exit(config.definitions)
    ui_folder(config)  # refuse now, in one line, what would stop every server process
    _log_as_configured(logging.INFO)
    if dev:
        _serve_dev(config, host, port)
        return
    from .logs import redacted
    from .serving import KeptWorker, MetricsFolderInUse, ServeOptions, Server, metrics_hooks, port_in_use, prepare_metrics

    if port_in_use(host, port):
        click.echo(f"caseloom serve: port {port} on {host} is in use (another server?); give another --port", err=True)
        sys.exit(1)
    try:
        prepare_metrics(config.instance)  # before the app is built: prometheus_client reads it when first imported
    except MetricsFolderInUse as exc:
        click.echo(f"caseloom serve: {exc}", err=True)
        sys.exit(1)
    from .web import create_app

    create_app(config)  # refuse now, with its message, anything else that would stop every server process
    options = ServeOptions(host=host, port=port, workers=workers, threads=threads, timeout=timeout,
                           log_format=config.log_format)
    worker = None
    if is_embedded(config.queue):
        from .jobs.liveness import timing

        try:
            timing()  # the worker's settings, refused here rather than in its process
        except ValueError as exc:
            click.echo(f"caseloom serve: {exc}", err=True)
            sys.exit(1)
        worker = KeptWorker()  # started again if it exits while the server runs
        log.info("background jobs: run by this server's worker process %s, from %s", worker.process.pid, config.queue)
    else:
        log.info("background jobs: queued on %s; run `caseloom worker` to process them", redacted(config.queue))
    log.info("serving http://%s:%s with %s process(es) x %s thread(s) (gunicorn)", host, port, workers, threads)
    try:
        Server(lambda: create_app(config), options, hooks=metrics_hooks()).run()
    finally:
        if worker is not None:
            worker.stop()


def _serve_dev(config: Config, host: str, port: int) -> None:
    """Flask's development server, with the embedded queue's jobs run in this process."""
    from .jobs import is_embedded
    from .logs import redacted
    from .web import create_app
    from .web.jobs_api import queue
    from .web.operations import QuietRequestHandler

    app = create_app(config)
    consumer = None
    if is_embedded(config.queue):
        try:
            consumer = queue(app).consumer(workers=2, embedded=True)
        except ValueError as exc:  # a setting the job queue cannot use
            click.echo(f"caseloom serve: {exc}", err=True)
            sys.exit(1)
        consumer.start()  # its reaper resumes at once the jobs this server was running when it last stopped
        log.info("background jobs: run in this process, from %s", config.queue)
    else:
        log.info("background jobs: queued on %s; run `caseloom worker` to process them", redacted(config.queue))
    try:  # requests are logged by the app (caseloom.web.operations), not by the development server
        app.run(host=host, port=port, threaded=True, use_reloader=False, request_handler=QuietRequestHandler)
    finally:
        if consumer is not None:
            consumer.stop(graceful=True)


@main.command()
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1), help="Worker threads.")
def worker(workers: int) -> None:
    """Run background jobs from CASELOOM_QUEUE until stopped (Ctrl-C lets running jobs finish)."""
    from .database import worker_engine
    from .jobs import JobQueue
    from .logs import redacted
    from .runtime import Runtime

    _log_as_configured(logging.INFO)
    if "CASELOOM_DB_POOL_SIZE" not in os.environ:  # one per thread, and the heartbeats', reaper's and clock's
        os.environ["CASELOOM_DB_POOL_SIZE"] = str(workers + 3)
    config = Config.from_env()
    runtime = Runtime(config, _load_or_exit(config.definitions),
                      engine=worker_engine(config.database_url, config.db_pool_size))
    try:
        consumer = JobQueue(runtime).consumer(workers=workers)
    except ValueError as exc:  # a CASELOOM_QUEUE we cannot use
        click.echo(f"caseloom worker: {exc}", err=True)
        sys.exit(1)
    log.info("caseloom worker: %s thread(s) on %s", workers, redacted(config.queue))
    consumer.run()


@main.group()
def user() -> None:
    """Manage users."""


@user.command("add")
@click.argument("name")
@click.option("--password", required=True)
@click.option("--role", "roles", multiple=True, required=True, help="A role; repeat for several.")
@click.option("--set", "values", multiple=True, metavar="FIELD=VALUE",
              help="A field of the user's record (e.g. contact=<sys_id> for a customer's login); repeat for several.")
def user_add(name: str, password: str, roles: tuple[str, ...], values: tuple[str, ...]) -> None:
    """Add a user or update an existing one (password, roles and any --set fields)."""
    from .records import Conflict, RecordError
    from .runtime import Runtime
    from .users import add_user

    config = Config.from_env()
    runtime = Runtime(config, _load_or_exit(config.definitions))
    try:
        fields = {}
        for item in values:
            field, sep, value = item.partition("=")
            if not sep or not field.strip():
                raise RecordError(None, f"--set {item!r}: expected FIELD=VALUE")
            fields[field.strip()] = value
        with runtime.transaction(write_lock=True) as service:  # reads, then writes, beside a running server
            add_user(service, name, password, list(roles), fields)
    except (RecordError, Conflict) as exc:
        click.echo(f"caseloom user add: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:
        click.echo(f"caseloom user add: {exc} (has `caseloom init` been run?)", err=True)
        sys.exit(1)
    click.echo(f"user {name} saved with roles {', '.join(roles)}")


@main.group()
def mail() -> None:
    """Inbound e-mail: read the mailbox now (the worker does it every CASELOOM_IMAP_POLL_SECONDS)."""


@main.group(hidden=True)
def email() -> None:
    """`caseloom email poll`: the first name of `caseloom mail fetch`, kept for scripts that use it."""


@mail.command("fetch")
def mail_fetch() -> None:
    """Act on the unseen messages of CASELOOM_IMAP_URL once, and say what each did."""
    import imaplib

    from .inbound.imap import poll
    from .runtime import Runtime

    context = click.get_current_context()
    name = f"caseloom {context.parent.info_name} {context.info_name}"
    config = Config.from_env()
    if not config.imap_url:
        click.echo(f"{name}: CASELOOM_IMAP_URL is not set (imap://user:password@host/INBOX)", err=True)
        sys.exit(1)
    runtime = Runtime(config, _load_or_exit(config.definitions))
    try:
        report = poll(runtime)
    except (OSError, imaplib.IMAP4.error) as exc:
        click.echo(f"{name}: the mailbox could not be read: {exc}", err=True)
        sys.exit(1)
    click.echo(f"read {report}")


email.add_command(mail_fetch, "poll")


@main.group()
def job() -> None:
    """Stop a background job, or undo what it created (README: "Stopping and undoing a job")."""


@job.command("cancel")
@click.argument("job_id")
@click.option("--user", "user_name", help="Act as this user (default: the system, an administrator).")
def job_cancel(job_id: str, user_name: str | None) -> None:
    """Stop a queued or running job at its next unit of work; what it did so far stays."""
    from .jobs import stop_job

    job = _as_user("caseloom job cancel", user_name, lambda service: stop_job(service, job_id))
    click.echo(f"job {job_id}: {job.message}")


@job.command("undo")
@click.argument("job_id")
@click.option("--user", "user_name", help="Act as this user (default: the system, an administrator).")
def job_undo(job_id: str, user_name: str | None) -> None:
    """Remove the records a finished or stopped job created that nobody has touched, in one transaction."""
    from .jobs import undo_job

    done = _as_user("caseloom job undo", user_name, lambda service: undo_job(service, job_id))
    click.echo(done.sentence())


@main.group()
def sla() -> None:
    """SLAs: make task SLAs again from their records' history (README: "Repairing SLAs")."""


@sla.command("repair")
@click.argument("table")
@click.option("--query", default="", metavar="ENCODED_QUERY",
              help="Repair only the records this encoded query matches (default: every record of TABLE).")
@click.option("--user", "user_name", help="Act as this user (default: the system, an administrator).")
def sla_repair(table: str, query: str, user_name: str | None) -> None:
    """Delete the task SLAs of TABLE's records and make them again from each record's history, as the
    active SLA definitions measure them now. One transaction; nothing is sent for what has passed."""
    from .query import parse_encoded
    from .timing.repair import repair, repairable

    def work(service):
        tdef = repairable(service.defs, table)
        done = repair(service, table, parse_encoded(query).where,
                      progress=lambda d: click.echo(f"{d.records:,} records so far", err=True))
        click.echo(f"Logged as {done.number} (sla_repair_log {done.log})", err=True)
        return done.words(tdef.label.lower())

    click.echo(_as_user("caseloom sla repair", user_name, work))


def _as_user(command: str, user_name: str | None, work):
    """Run `work(service)` in one transaction as `user_name` (the system when None); errors exit 1."""
    import sqlalchemy as sa

    from .access import SYSTEM
    from .database import is_unreachable
    from .logs import redacted
    from .query import QueryError
    from .records import AccessDenied, Conflict, NotFound
    from .runtime import Runtime
    from .timing.repair import RepairRefused
    from .users import actor_named

    config = Config.from_env()
    _require_database(command, config.database_url)
    runtime = Runtime(config, _load_or_exit(config.definitions))
    try:
        with runtime.engine.connect() as conn:
            actor = actor_named(runtime.storage, conn, user_name) if user_name else SYSTEM
        if actor is None:
            click.echo(f"{command}: no active user named {user_name!r}", err=True)
            sys.exit(1)
        with runtime.transaction(actor, write_lock=True) as service:
            return work(service)
    except (AccessDenied, Conflict, NotFound, QueryError, RepairRefused) as exc:
        click.echo(f"{command}: {exc}", err=True)
        sys.exit(1)
    except sa.exc.OperationalError as exc:  # the database out of reach, or not made by `caseloom init`
        why = "cannot be reached" if is_unreachable(exc) else "is not a Caseloom database (run `caseloom init`)"
        click.echo(f"{command}: the database {redacted(config.database_url)} {why}", err=True)
        sys.exit(1)


def _require_database(command: str, database_url: str) -> None:
    """A SQLite database file that is not there is said, not created empty by opening it."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:") \
            and not os.path.exists(url.database):
        click.echo(f"{command}: no database at {url.database} (run `caseloom init` first)", err=True)
        sys.exit(1)


@main.group()
def script() -> None:
    """Run sandboxed scripts."""


@script.command("run")
@click.argument("file")
@click.option("--records", "fixture", metavar="FIXTURE.json",
              help="Run against a JSON object mapping table names to lists of records, not the database.")
@click.option("--params", "params_json", metavar="JSON", help="A JSON object the script gets as `params`.")
def script_run(file: str, fixture: str | None, params_json: str | None) -> None:
    """Run a recipient script in the sandbox; print {"result", "count", "elapsed_ms"} as JSON.

    Exit 0 when it ran, 2 when it was refused before running (FILE:LINE: why), 3 when it failed
    while running or hit a limit, 1 for anything else (no such file, bad --params or fixture)."""
    import json
    from pathlib import Path

    from .sandbox import FixtureData, ScriptFailed, ScriptRefused, run_script

    def fail(message: str, code: int = 1) -> None:
        click.echo(message, err=True)
        sys.exit(code)

    try:
        source = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"caseloom script run: cannot read {file}: {getattr(exc, 'strerror', None) or exc}")
    try:
        params = json.loads(params_json) if params_json else {}
    except json.JSONDecodeError as exc:
        fail(f"caseloom script run: --params is not valid JSON: {exc}")
    if not isinstance(params, dict):
        fail("caseloom script run: --params must be a JSON object")
    config = Config.from_env()
    if fixture:
        try:
            data = FixtureData.from_file(fixture)
        except ValueError as exc:
            fail(f"caseloom script run: --records {exc}")
        enabled = _scripts_switch(config, offline=True)
    else:
        from .runtime import Runtime
        from .sandbox import DatabaseData

        runtime = Runtime(config, _load_or_exit(config.definitions))
        enabled = _scripts_switch(config, runtime=runtime)
        data = DatabaseData(runtime)  # as the system user
    if not enabled:
        from .sandbox import ScriptsDisabled

        fail(f"{file}: {ScriptsDisabled()}", 2)
    try:
        ran = run_script(source, file, data, params)
    except ScriptRefused as exc:
        fail(str(exc), 2)
    except ScriptFailed as exc:
        fail(str(exc), 3)
    for line in ran.log:
        click.echo(f"log: {line}", err=True)
    click.echo(json.dumps({"result": ran.result, "count": ran.count, "elapsed_ms": ran.elapsed_ms}))


def _scripts_switch(config: Config, runtime=None, offline: bool = False) -> bool:
    """The kill switch as the database holds it. Offline (a --records run), a database that is
    not there or not initialised leaves the declared default; otherwise that is an error."""
    from pathlib import Path

    from .properties import Properties
    from .runtime import Runtime
    from .sandbox import scripts_enabled

    url = config.database_url
    if offline and url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        return True  # connecting would create an empty database file
    try:
        runtime = runtime or Runtime(config)
        with runtime.engine.connect() as conn:
            return scripts_enabled(Properties(runtime.defs, runtime.storage, conn))
    except Exception as exc:
        if offline:
            return True
        click.echo(f"caseloom script run: cannot read the system properties: {exc} "
                   "(has `caseloom init` been run?)", err=True)
        sys.exit(1)


@main.command()
@click.option("--scale", default=100_000, show_default=True, type=click.IntRange(min=10),
              help="N: children created, synced and closed; the bench scenario scales its data by N.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per benchmark on stdout.")
@click.option("--database", metavar="URL", default=None,
              help="A PostgreSQL server to run on (a scratch database is created there and dropped); "
                   "default: a SQLite file in a temporary folder.")
@click.option("--writes", is_flag=True,
              help="Only the write benchmarks, on only the data they need; implied by a scale above 100,000.")
def bench(scale: int, as_json: bool, database: str | None, writes: bool) -> None:
    """Run the performance suite: each benchmark beside its plain baseline (README: Performance)."""
    import json
    import sys

    from .bench import DEFAULT_SCALE, BenchRun

    config = Config.from_env()
    defs = _load_or_exit(config.definitions)
    say = (lambda line: click.echo(f"# {line}", err=True)) if as_json else click.echo
    try:
        run = BenchRun(defs, config, scale, database, say, writes_only=writes or scale > DEFAULT_SCALE)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    only = " (the write benchmarks only)" if run.writes_only else ""
    say(f"caseloom bench --scale {scale} on {run.where['database']}{only}")
    say(f"machine: {run.where['machine']}")
    say(f"settings: {run.where['settings']}")
    for result in run.run():
        line = result.as_json()
        if as_json:
            line |= run.where  # each figure says where it came from
            click.echo(json.dumps(line))
            sys.stdout.flush()
        else:
            click.echo(f"{line['name']:<22} n={line['n']:<9} {line['seconds']:>10.4f} s  {line['per_second']:>12,.1f}/s"
                       f"  baseline {line['baseline_seconds']:.4f} s  ratio {line['ratio']}")


@main.command()
@click.option("--url", default="http://127.0.0.1:5000", show_default=True, help="The running demo server.")
@click.option("--out", default="docs", show_default=True, help="Folder for the PNG files.")
@click.option("--plan", default="docs/screenshots.yaml", show_default=True, help="Which pages to photograph.")
def screenshots(url: str, out: str, plan: str) -> None:
    """Take the README's screenshots of the running demo, as the plan file lists them."""
    from pathlib import Path
    from urllib.parse import quote

    import yaml

    from .screenshots import plan_shots, take

    config = Config.from_env()
    defs = _load_or_exit(config.definitions)
    modules = {m.label: f"/{m.table}_list.do?sysparm_query={quote(m.query)}"
               for app in defs.menu for m in app.modules if m.table and not m.page}
    passwords = {u.user_name: u.password for u in defs.demo.users}
    shots = plan_shots(yaml.safe_load(Path(plan).read_text()), modules)
    for written in take(url.rstrip("/"), shots, Path(out), passwords):
        click.echo(f"wrote {written}")


@main.command()
@click.option("--dry-run", is_flag=True, help="Count what each rule would delete; delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per rule on stdout.")
def cleanup(dry_run: bool, as_json: bool) -> None:
    """Run the table cleaner's active rules now (sys_auto_flush), as the worker does every hour: each
    deletes its table's records whose match field is older than its age and that match its conditions.
    One line per rule; exits 1 when a rule could not run."""
    import json

    import sqlalchemy as sa

    from .cleanup import clean
    from .database import is_unreachable
    from .logs import redacted
    from .runtime import Runtime

    config = Config.from_env()
    _require_database("caseloom cleanup", config.database_url)
    runtime = Runtime(config, _load_or_exit(config.definitions))
    try:
        done = clean(runtime, dry_run=dry_run)
    except (sa.exc.OperationalError, sa.exc.ProgrammingError) as exc:  # away, or without the rules' table
        why = "cannot be reached" if is_unreachable(exc) else "has no table cleaner rules table (run `caseloom init`)"
        click.echo(f"caseloom cleanup: the database {redacted(config.database_url)} {why}", err=True)
        sys.exit(1)
    finally:
        runtime.engine.dispose()
    for cleaned in done:
        click.echo(json.dumps(cleaned.as_json()) if as_json else cleaned.words())
    if not done and not as_json:
        click.echo("no active table cleaner rule (sys_auto_flush)")
    if any(c.error for c in done):
        sys.exit(1)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object, as GET /api/caseloom/status answers.")
def status(as_json: bool) -> None:
    """Say what the deployment is doing now: the database, the queue and the job workers (as /health checks
    them), the jobs queued and running and the last ones to end, and the e-mail by state (README: System
    status). Exits 1 when a part is down."""
    import json

    from .health import Health
    from .jobs import JobQueue
    from .runtime import Runtime
    from .status import read_status, status_lines

    config = Config.from_env()
    _require_database("caseloom status", config.database_url)
    runtime = Runtime(config, _load_or_exit(config.definitions))
    try:
        logging.getLogger("caseloom.health").setLevel(logging.ERROR)  # a part down is in the answer, not logged too
        found = read_status(runtime, JobQueue(runtime), Health())  # a queue it cannot use: the queue is down
    finally:
        runtime.engine.dispose()
    click.echo(json.dumps(found.as_json(), indent=2) if as_json else "\n".join(status_lines(found)))
    if not found.ok:
        sys.exit(1)


@main.command()
@click.argument("file")
def backup(file: str) -> None:
    """Write a consistent copy of the CASELOOM_DATABASE_URL database to FILE, safe while a server writes.

    SQLite: an online backup (a SQLite file). PostgreSQL: a pg_dump custom archive. FILE appears only
    when complete; a failure leaves no FILE (and an older FILE as it was)."""
    from .backup import BackupError
    from .backup import backup as write_backup

    try:
        done = write_backup(Config.from_env().database_url, file)
    except BackupError as exc:
        click.echo(f"caseloom backup: {exc}", err=True)
        sys.exit(1)
    click.echo(f"wrote {done.file} ({done.size:,} bytes), a backup of {done.database}")


@main.command()
@click.argument("file")
@click.option("--force", is_flag=True, help="Restore even while a server or worker is seen running on the database.")
def restore(file: str, force: bool) -> None:
    """Replace EVERYTHING in the CASELOOM_DATABASE_URL database with the backup in FILE.

    All records, users and definitions there now are replaced by those in FILE (no confirmation
    is asked). FILE must be a `caseloom backup` of the same kind of database; it is checked first,
    and a restore that fails leaves the database as it was. Stop `caseloom serve` and `caseloom
    worker` first: while one is seen running on the database, the restore is refused (--force
    restores all the same)."""
    from .backup import BackupError, live_workers
    from .backup import restore as read_backup
    from .serving import serving_here

    config = Config.from_env()
    database_url = config.database_url
    running = [] if force else live_workers(database_url)
    here = None if force else serving_here(config.instance)
    if here is not None:  # seen by its lock: on Redis a server runs no job worker, so no sys_worker row names it
        running.insert(0, f"a `caseloom serve` of the instance folder {here.parent} on this machine")
    if running:
        click.echo(f"caseloom restore: the database is in use ({'; '.join(running[:3])}): stop `caseloom serve` "
                   "and `caseloom worker` first, or give --force to replace everything under them", err=True)
        sys.exit(1)
    try:
        done = read_backup(database_url, file)
    except BackupError as exc:
        click.echo(f"caseloom restore: {exc}", err=True)
        sys.exit(1)
    click.echo(f"restored {done.database} from {done.file} ({done.size:,} bytes)")


if __name__ == "__main__":
    main()
