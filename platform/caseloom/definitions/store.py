"""Definition files kept in the database, so every process sharing it runs the same set.

`caseloom init` copies the definitions folder in; a change (definitions.changes: the API, the
Definitions area, a file edited on disk) is validated, migrated and stored here, written back
to the folder, and bumps a generation number that each server process checks at the start
of a request.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import sqlalchemy as sa

from ..storage import Storage
from .loader import load_sources, read_sources
from .model import ROOT, Definitions

GENERATION = "definitions_generation"
DISPLAY_ROOT = ROOT  # stored files are named definitions/<path> in error locations


class BadPath(ValueError):
    """A definition path that is not a relative .yaml path inside the folder."""


def check_path(path: str) -> str:
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or pure.suffix not in (".yaml", ".yml", ".csv") or not pure.stem:
        raise BadPath(f"{path!r} is not a relative path to a .yaml (or .csv) file inside the definitions folder")
    return str(pure)


def version_of(text: str | None) -> str:
    """A short hash of a file's text; "" for a file that does not exist."""
    return "" if text is None else hashlib.sha256(text.encode()).hexdigest()[:16]


def candidate_set(texts: Mapping[str, str], changes: Mapping[str, str | None]) -> Definitions:
    """A whole set with some files replaced (or removed, text None), loaded and validated;
    raises DefinitionErrors when the set would be invalid."""
    texts = dict(texts)
    for path, text in changes.items():
        if text is None:
            texts.pop(path, None)
        else:
            texts[path] = text
    return load_sources(sorted(texts.items()), display_root=DISPLAY_ROOT)


def write_to_folder(folder: Path, path: str, text: str | None) -> None:
    """Write (or remove) one file in the definitions folder, so the folder stays the source a team
    keeps in git; a missing folder (a server run from the database alone) is left alone."""
    if not folder.is_dir():
        return
    target = folder / check_path(path)
    if text is None:
        target.unlink(missing_ok=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


@dataclass(frozen=True)
class HistoryEntry:
    id: int
    path: str
    action: str
    user: str | None
    created_on: dt.datetime
    old_text: str | None
    new_text: str | None

    @property
    def restored_text(self) -> str | None:
        """The text that restoring this entry brings back: the version it made, or, for a
        deletion, the version it deleted."""
        return self.new_text if self.new_text is not None else self.old_text


def _generation(storage: Storage) -> sa.Select:
    """The SELECT of the set's generation, built once per storage."""
    meta = storage.internal("sys_meta")
    return storage.cached(GENERATION, lambda: sa.select(meta.c.value).where(meta.c.name == GENERATION))


def generation_column(storage: Storage) -> sa.Label:
    """The set's generation as a column (labelled `definitions_generation`) another statement can
    carry, so a request reads it without a round trip of its own; built once per storage."""
    return storage.cached((GENERATION, "column"), lambda: _generation(storage).scalar_subquery().label(GENERATION))


def generation_of(value: object) -> int:
    """The generation as stored (text; nothing before the first change) as a number."""
    return int(value or 0)


class DefinitionStore:
    """Read and change the definition files held in the database."""

    def __init__(self, storage: Storage, conn: sa.Connection):
        self.conn = conn
        self.files = storage.internal("sys_definition_file")
        self.history_table = storage.internal("sys_definition_history")
        self.meta = storage.internal("sys_meta")
        self.storage = storage

    def texts(self) -> dict[str, str]:
        rows = self.conn.execute(sa.select(self.files.c.path, self.files.c.text).order_by(self.files.c.path))
        return dict(rows.all())

    def listing(self) -> list[dict]:
        stmt = sa.select(self.files.c.path, self.files.c.version, self.files.c.updated_on,
                         self.files.c.updated_by).order_by(self.files.c.path)
        return [dict(r) for r in self.conn.execute(stmt).mappings()]

    def generation(self) -> int:
        """The set's generation (read before every request: the statement is built once per storage)."""
        return generation_of(self.conn.execute(_generation(self.storage)).scalar())

    def candidate(self, changes: Mapping[str, str | None]) -> Definitions:
        """The stored set with some files replaced (see `candidate_set`)."""
        return candidate_set(self.texts(), changes)

    def lock(self) -> None:
        """Serialise changes to the set: the generation row stays locked until the caller's
        transaction ends (FOR UPDATE on PostgreSQL; SQLite writers already hold its write lock)."""
        self.conn.execute(_generation(self.storage).with_for_update())

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
        changes = self.disk_changes(folder)
        for path, text in changes.items():
            self.write(path, text, user)
        return len(changes)

    def disk_changes(self, folder: Path) -> dict[str, str | None]:
        """Files whose text in the folder differs from the stored one: (path: text on disk, or
        None for a stored file no longer on disk); nothing when there is no folder."""
        if not folder.is_dir():
            return {}
        on_disk = dict(read_sources(folder))
        stored = self.texts()
        return {path: on_disk.get(path) for path in sorted(set(on_disk) | set(stored))
                if on_disk.get(path) != stored.get(path)}

    def history(self, limit: int = 200, path: str | None = None) -> list[HistoryEntry]:
        stmt = sa.select(self.history_table).order_by(self.history_table.c.id.desc()).limit(limit)
        if path is not None:
            stmt = stmt.where(self.history_table.c.path == path)
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
