"""The runtime: configuration, definitions, storage and engine, shared by web, CLI and worker."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from .access import SYSTEM, Actor
from .automation import Automation
from .config import Config
from .database import make_engine
from .definitions import Definitions, load_folder
from .records import RecordService
from .storage import Storage


class Runtime:
    """Everything a unit of work needs, built once per process from the configuration."""

    def __init__(self, config: Config, defs: Definitions | None = None, engine: sa.Engine | None = None):
        self.config = config
        self.defs = defs or load_folder(config.definitions)
        self.storage = Storage(self.defs)
        self.automation = Automation(self.defs)
        self.engine = engine or make_engine(config.database_url)

    @classmethod
    def from_env(cls, **overrides) -> Runtime:
        return cls(Config.from_env(**overrides))

    def records(self, conn: sa.Connection, actor: Actor = SYSTEM, check_access: bool = True) -> RecordService:
        return RecordService(self.storage, conn, actor, check_access, self.automation)

    @contextmanager
    def transaction(self, actor: Actor = SYSTEM, check_access: bool = True) -> Iterator[RecordService]:
        """One unit of work: commits when the block ends, rolls back everything if it raises."""
        with self.engine.begin() as conn:
            yield self.records(conn, actor, check_access)
