"""Definition files kept in the database, so every process sharing it runs the same set.

`caseloom init` copies the definitions folder in; the definitions API changes files here
(after validating the whole new set and migrating the schema) and bumps a generation
number that each server process checks at the start of a request.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import sqlalchemy as sa

from ..storage import Storage
from .loader import load_sources
from .model import Definitions

GENERATION = "definitions_generation"


class BadPath(ValueError):
    """A definition path that is not a relative .yaml path inside the folder."""


def check_path(path: str) -> str:
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or pure.suffix not in (".yaml", ".yml", ".csv") or not pure.stem:
        raise BadPath(f"{path!r} is not a relative path to a .yaml (or .csv) file inside the definitions folder")
    return str(pure)


def version_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class HistoryEntry:
    id: int
    path: str
    action: str
    user: str | None
    created_on: dt.datetime
    old_text: str | None
    new_text: str | None


class DefinitionStore:
    """Read and change the definition files held in the database."""

    def __init__(self, storage: Storage, conn: sa.Connection):
        self.conn = conn
        self.files = storage.internal("sys_definition_file")
        self.history_table = storage.internal("sys_definition_history")
        self.meta = storage.internal("sys_meta")

    def texts(self) -> dict[str, str]:
        rows = self.conn.execute(sa.select(self.files.c.path, self.files.c.text).order_by(self.files.c.path))
        return dict(rows.all())

    def listing(self) -> list[dict]:
        stmt = sa.select(self.files.c.path, self.files.c.version, self.files.c.updated_on,
                         self.files.c.updated_by).order_by(self.files.c.path)
        return [dict(r) for r in self.conn.execute(stmt).mappings()]

    def generation(self) -> int:
        value = self.conn.execute(sa.select(self.meta.c.value).where(self.meta.c.name == GENERATION)).scalar()
        return int(value or 0)

    def candidate(self, path: str, text: str | None) -> tuple[dict[str, str], Definitions]:
        """The whole set with one file replaced (or removed, text None), loaded and validated;
        raises DefinitionErrors when the set would be invalid."""
        texts = self.texts()
        if text is None:
            texts.pop(path, None)
        else:
            texts[path] = text
        return texts, load_sources(sorted(texts.items()))

    def write(self, path: str, text: str | None, user: str, action: str | None = None) -> None:
        """Store (or delete) one file, record it in the history, and bump the generation."""
        old = self.texts().get(path)
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
        self.conn.execute(sa.delete(self.files).where(self.files.c.path == path))
        if text is not None:
            self.conn.execute(sa.insert(self.files).values(path=path, text=text, version=version_of(text),
                                                           updated_on=now, updated_by=user))
        action = action or ("delete" if text is None else "create" if old is None else "update")
        self.conn.execute(sa.insert(self.history_table).values(path=path, action=action, old_text=old, new_text=text,
                                                               user=user, created_on=now))
        self._bump()

    def sync_folder(self, folder: Path, user: str = "init") -> int:
        """Make the stored set equal to the folder's files (used by `caseloom init`); returns the
        number of files changed."""
        on_disk = {str(p.relative_to(folder)): p.read_text(encoding="utf-8")
                   for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix in (".yaml", ".yml", ".csv")}
        stored = self.texts()
        changed = 0
        for path in sorted(set(on_disk) | set(stored)):
            if on_disk.get(path) != stored.get(path):
                self.write(path, on_disk.get(path), user)
                changed += 1
        return changed

    def history(self, limit: int = 200) -> list[HistoryEntry]:
        stmt = sa.select(self.history_table).order_by(self.history_table.c.id.desc()).limit(limit)
        return [HistoryEntry(**r) for r in self.conn.execute(stmt).mappings()]

    def entry(self, entry_id: int) -> HistoryEntry | None:
        row = self.conn.execute(sa.select(self.history_table).where(self.history_table.c.id == entry_id)).mappings().first()
        return HistoryEntry(**row) if row else None

    def _bump(self) -> None:
        generation = self.generation() + 1
        updated = self.conn.execute(sa.update(self.meta).where(self.meta.c.name == GENERATION)
                                    .values(value=str(generation))).rowcount
        if not updated:
            self.conn.execute(sa.insert(self.meta).values(name=GENERATION, value=str(generation)))
