"""The runtime: configuration, definitions, storage and engine, shared by web, CLI and worker."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from .access import SYSTEM, Actor
from .automation import Automation
from .cleanup import check_rule as _check_rule  # noqa: F401  (registers the checks on the table cleaner's rules)
from .config import Config
from .database import make_engine, write_transaction
from .definitions import Definitions, load_folder
from .memberlists import check_list as _check_list  # noqa: F401  (registers the checks on a list's condition and script)
from .records import RecordService
from .storage import Storage
from .timing import records as _timing_records  # noqa: F401  (registers the checks on schedules and SLAs)
from .users import USERS  # noqa: F401  (registers the checks on users and roles: sessions, the last admin)


class Runtime:
    """Everything a unit of work needs, built once per process from the configuration."""

    def __init__(self, config: Config, defs: Definitions | None = None, engine: sa.Engine | None = None,
                 set_based: bool = True):
        self.config = config
        self.set_based = set_based  # False: bulk work row by row (RecordService.set_based)
        self.defs = defs or load_folder(config.definitions)
        self.storage = Storage.of(self.defs)
        self.automation = Automation(self.defs)
        self.engine = engine or make_engine(config.database_url, config.db_pool_size)
        # Called with the RecordService of each unit of work that committed, e.g. to enqueue the
        # delivery of the e-mail it wrote (caseloom.jobs); a failing hook is logged, never raised.
        self.commit_hooks: list[Callable[[RecordService], None]] = []

    @classmethod
    def from_env(cls, **overrides) -> Runtime:
        return cls(Config.from_env(**overrides))

    def records(self, conn: sa.Connection, actor: Actor = SYSTEM, check_access: bool = True) -> RecordService:
        service = RecordService(self.storage, conn, actor, check_access, self.automation, self.set_based)
        service.scripts_dir = self.config.scripts  # where script paths in records are read from
        return service

    @contextmanager
    def transaction(self, actor: Actor = SYSTEM, check_access: bool = True,
                    write_lock: bool = False) -> Iterator[RecordService]:
        """One unit of work: commits when the block ends, rolls back everything if it raises.
        With `write_lock`, SQLite takes its write lock at the start, so work that reads and then
        writes beside other writers waits its turn instead of failing with "database is locked"."""
        with write_transaction(self.engine) if write_lock else self.engine.begin() as conn:
            service = self.records(conn, actor, check_access)
            yield service
        self.committed(service)

    def committed(self, service: RecordService) -> None:
        """Run the commit hooks for a unit of work that has just committed."""
        for hook in self.commit_hooks:
            try:
                hook(service)
            except Exception:  # the work is committed; a follow-up that fails must not undo the caller
                logging.getLogger(__name__).exception("commit hook %r failed", hook)
