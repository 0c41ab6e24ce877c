"""One path for every change to the definition set, whoever makes it: the definitions API, the
Definitions area and the layout editors in the browser, a file edited on disk, a restore.

A change is a few files replaced or removed. It is validated as a whole new set, planned as
a dry run (the diff, the schema changes it implies, the data they would lose), and applied
in the caller's transaction: the schema migrated with Alembic's operations and the files
stored with their history. The caller commits, writes the folder and switches its process.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from ..migrate import DataLossRefused, Step, apply_steps, plan, planned_indexes
from ..storage import Storage
from .loader import SYSTEM_PREFIX
from .model import Definitions
from .store import DISPLAY_ROOT, DefinitionStore, version_of
from .yamlsource import Location


class StaleChange(Exception):
    """A file changed in the database after the change was made from it; nothing was changed."""


@dataclass(frozen=True)
class FileChange:
    path: str
    old: str | None  # None: the file is new
    new: str | None  # None: the file is removed

    @property
    def action(self) -> str:
        return "create" if self.old is None else "delete" if self.new is None else "update"

    def diff(self) -> list[str]:
        """The unified diff from the current version, line by line."""
        old, new = (self.old or "").splitlines(), (self.new or "").splitlines()
        return list(difflib.unified_diff(old, new, f"a/{self.path}", f"b/{self.path}", lineterm=""))


@dataclass(frozen=True)
class ChangePlan:
    """What a change would do, computed without doing it."""

    files: tuple[FileChange, ...]
    defs: Definitions | None  # the new set (None when nothing changes)
    schema_changes: tuple[str, ...] = ()
    losses: tuple[str, ...] = ()  # exactly what would be lost, e.g. "field x.y and its 37 values"
    not_built: tuple[str, ...] = ()  # indexes a committed change could not build (caseloom.indexbuild)

    @property
    def empty(self) -> bool:
        return not self.files


def plan_change(store: DefinitionStore, changes: Mapping[str, str | None],
                bases: Mapping[str, str] | None = None) -> ChangePlan:
    """The dry run of a change; raises DefinitionErrors (invalid set) or StaleChange (a file's
    stored version is no longer the base it was edited from)."""
    return _plan(store, changes, bases)[0]


def apply_change(store: DefinitionStore, changes: Mapping[str, str | None], user: str, *, force: bool = False,
                 accepted: Collection[str] = (), bases: Mapping[str, str] | None = None,
                 action: str | None = None) -> ChangePlan:
    """Validate, plan and apply a change in the store's transaction; returns what was done.
    Data may be lost only when `force` is set or every loss the plan finds was `accepted` as
    shown to the user (a count that grew since is a new loss): otherwise DataLossRefused and
    nothing changed."""
    store.lock()
    change_plan, steps, storage = _plan(store, changes, bases)
    if any(loss not in accepted for loss in change_plan.losses) and not force:
        raise DataLossRefused(list(change_plan.losses))
    if change_plan.empty:
        return change_plan
    apply_steps(store.conn, storage, steps)
    for change in change_plan.files:
        store.write(change.path, change.new, user, action)
    return change_plan


def _plan(store: DefinitionStore, changes: Mapping[str, str | None],
          bases: Mapping[str, str] | None) -> tuple[ChangePlan, list[Step], Storage | None]:
    current = store.texts()
    for path, base in (bases or {}).items():
        if version_of(current.get(path)) != base:
            raise StaleChange(f"{path} was changed by someone else after you opened it; "
                              "review the change against the current version")
    files = tuple(FileChange(path, current.get(path), text) for path, text in sorted(changes.items())
                  if current.get(path) != text)
    if not files:
        return ChangePlan((), None), [], None
    defs = store.candidate({f.path: f.new for f in files})
    storage = Storage.of(defs)
    steps = plan(store.conn, storage)
    described = [s.description for s in steps] + planned_indexes(store.conn, storage, steps)
    return ChangePlan(files, defs, tuple(described), tuple(s.loss for s in steps if s.loss)), steps, storage


def stored_path(location: Location) -> str:
    """The path of a stored file from an error location (`definitions/tables/x.yaml`)."""
    return location.path.removeprefix(f"{DISPLAY_ROOT}/")


def declaring_file(defs: Definitions, location: Location | None) -> str | None:
    """The definition file a located object (a table, a property) is declared in, or None for
    the platform's own (system) definitions, which are not edited as application files."""
    if location is None or location.path.startswith(SYSTEM_PREFIX):
        return None
    matches = [f.path for f in defs.files if location.path == f.path or location.path.endswith("/" + f.path)]
    return max(matches, key=len, default=None)
