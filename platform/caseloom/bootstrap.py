"""`caseloom init`: migrate the schema, seed properties, record definitions, add demo data."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .config import Config
from .definitions import Definitions
from .definitions.store import DefinitionStore
from .demo import DemoError, demo_loaded, load_demo, locate
from .migrate import migrate
from .properties import seed_properties
from .runtime import Runtime
from .timing.seed import seed_timing


@dataclass
class InitReport:
    migrated: list[str] = field(default_factory=list)
    not_built: list[str] = field(default_factory=list)  # new indexes a build after the commit could not make
    properties: int = 0
    timing: int = 0  # declared schedules and SLA definitions added or changed
    definitions: int = 0
    lists: list[str] = field(default_factory=list)
    demo: dict[str, int] | None = None
    demo_skipped: bool = False
    demo_users: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"schema: {len(self.migrated)} change(s)"] + [f"  {m}" for m in self.migrated]
        out += [f"  not built yet: {note}" for note in self.not_built]
        if self.definitions:
            out.append(f"definitions: {self.definitions} file(s) stored for the server processes")
        if self.timing:
            out.append(f"schedules and SLA definitions: {self.timing} added or changed")
        if self.properties:
            out.append(f"properties: {self.properties} added with their defaults")
        if self.demo is not None:
            out.append("demo data: " + ", ".join(f"{n} {name}" for name, n in self.demo.items()))
        if self.demo_skipped:
            out.append("demo data: already loaded, left as it is")
        if self.lists:
            out.append("declared lists:")
            out.extend(self.lists)
        if self.demo_users:
            out.append("demo users (user / password: roles):")
            out.extend(f"  {u} / {p}: {', '.join(r)}" for u, p, r in self.demo_users)
        return out


DEFAULT_SCALE = 200


def initialise(config: Config, defs: Definitions, force: bool = False, demo: bool = False,
               scale: int = DEFAULT_SCALE, runtime: Runtime | None = None, *, accounts: int | None = None) -> InitReport:
    """Migrate the schema, seed properties, store the definitions, load the demo data at `scale`
    (`accounts`: the same, by the name `caseloom init --accounts` gives it) and build the declared lists.
    Raises DemoError or DeclaredListError, each naming what could not be made."""
    scale = scale if accounts is None else accounts
    runtime = runtime or Runtime(config, defs)  # each transaction reads, then writes: the write lock first
    report = InitReport()
    report.migrated = migrate(runtime.engine, runtime.storage, force=force, not_built=report.not_built)
    with runtime.transaction(write_lock=True) as service:
        report.properties = seed_properties(service)
        report.timing = seed_timing(service)
        report.definitions = DefinitionStore(runtime.storage, service.conn).sync_folder(Path(config.definitions))
    if demo:
        with runtime.transaction(write_lock=True) as service:
            if demo_loaded(service):
                report.demo_skipped = True
            else:
                try:
                    report.demo = load_demo(service, scale)
                except DemoError as exc:
                    raise locate(exc, config.definitions, defs.files) from None
        report.demo_users = [(u.user_name, u.password, u.roles) for u in defs.demo.users]
    if defs.declared_lists:
        from .memberlists import apply_declared

        with runtime.transaction(write_lock=True) as service:
            report.lists = apply_declared(service)
    refresh_statistics(runtime.engine)
    return report


GROWN_SAMPLE = 1000  # rows a periodic ANALYZE samples per index on SQLite (PRAGMA analysis_limit): quick at any size


def refresh_grown(engine, metadata) -> list[str]:
    """On SQLite, every hour from the worker: ANALYZE the tables that have grown well past their
    statistics (bulk.grown_past_statistics), sampling at most GROWN_SAMPLE rows an index. SQLite keeps
    the statistics of `caseloom init` until the next one, so a table that was small then (the audit
    rows, the task SLAs) is planned as small for ever after, and a lookup of many keys scans it.
    Returns the tables analysed. PostgreSQL's autovacuum does this there."""
    from .bulk import grown_past_statistics
    from .database import write_transaction

    if engine.dialect.name != "sqlite":
        return []
    with engine.connect() as conn:  # looked at first, so that a quiet hour takes no write lock
        grown = [table for table in metadata.sorted_tables if grown_past_statistics(conn, table)]
    if not grown:
        return []
    with write_transaction(engine) as conn:
        conn.exec_driver_sql(f"PRAGMA analysis_limit={GROWN_SAMPLE}")
        try:
            for table in grown:
                conn.exec_driver_sql(f'ANALYZE "{table.name}"')
        finally:
            conn.exec_driver_sql("PRAGMA analysis_limit=0")
    return [table.name for table in grown]


def refresh_statistics(engine) -> None:
    """Give the query planner fresh statistics after bulk loads (SQLite has none until ANALYZE,
    and without them it picks low-selectivity indexes for lists of a million rows)."""
    import sqlalchemy as sa

    with engine.begin() as conn:
        conn.execute(sa.text("ANALYZE"))
