"""Demo data from the definitions' `demo:` files, scaled by `caseloom init --scale N`, written set-based.

Generated rows get deterministic sys_ids, so a generator can reference another's rows
by index before they exist (two tables whose records point at each other); reference
checks are deferred to the end of the load. A value that cannot be written stops the load
with a DemoError naming the generator, the row (1 is the first) and the field.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import itertools
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from .definitions.model import DefinitionFile, DemoGenerator
from .definitions.yamlsource import DefinitionError, parse_yaml
from .fieldtypes import FIELD_TYPES
from .records import RecordError, RecordService, now
from .users import add_user

MARKER = "demo_loaded"
DANGLING_SLICE = 500  # rows whose references are looked up at a time, when a load failed on one


def demo_sys_id(generator: str, index: int) -> str:
    """The sys_id of a generator's row `index` (0 is the first): a hash of both, the same on every
    run, so another generator (or a definition) can name the row before it is written."""
    return hashlib.md5(f"caseloom-demo:{generator}:{index}".encode()).hexdigest()


LOADED_MS = 1_577_836_800_000  # 2020-01-01 00:00 UTC in milliseconds: when the bench's data was "written"


def ordered_sys_id(generator: str, index: int) -> str:
    """The same row's sys_id in ascending order (the bench's data), as `records.new_sys_id` would have
    given it when the data was written, in the past: the milliseconds of LOADED_MS in 12 hex digits, 8
    from the generator's name, then the index in 12. The platform gives every record it creates an
    ascending sys_id, so a table's rows sort by sys_id in the order they were written; hashed sys_ids
    scatter a read by sys_id over the whole table. The bench's rows sort before every record the
    platform writes now, as old data does: a walk of the newest records (similar lists) meets what the
    benchmarks wrote first, not the generated million."""
    return f"{LOADED_MS:012x}{_generator_prefix(generator)}{index:012x}"


@functools.cache
def _generator_prefix(generator: str) -> str:
    return hashlib.md5(f"caseloom-demo:{generator}".encode()).hexdigest()[:8]


SysIds = Callable[[str, int], str]  # a generator's name and a row's index to the row's sys_id


class DemoError(Exception):
    """A demo generator's value that cannot be written: which generator, row and field, and why;
    `location` is where the definition says it (PATH:LINE:COL), when known."""

    def __init__(self, generator: str, row: int | None, field: str | None, why: str, location: str | None = None):
        self.generator, self.row, self.field, self.why, self.location = generator, row, field, why, location
        where = f"{location}: " if location else ""
        row_text = f" row {row}" if row is not None else ""
        field_text = f"{field}: " if field else ""
        super().__init__(f"{where}demo: generator {generator!r}{row_text}: {field_text}{why}")

    def at(self, location: str | None) -> DemoError:
        return DemoError(self.generator, self.row, self.field, self.why, location)


def generator_count(gen: DemoGenerator, scale: int) -> int:
    """Rows of a generator: its `count`, or `per_scale` rows per unit of the scale (at least one)."""
    if gen.count is not None:
        return gen.count
    return max(1, int(scale * gen.per_account)) if scale > 0 else 0


def demo_loaded(service: RecordService) -> bool:
    meta = service.storage.internal("sys_meta")
    return service.conn.execute(sa.select(meta.c.value).where(meta.c.name == MARKER)).scalar() is not None


def load_demo(service: RecordService, scale: int = 200) -> dict[str, int]:
    """Create the demo users and generated rows; returns rows written per generator. Raises
    DemoError naming the generator, row and field of the first value that cannot be written."""
    demo = service.defs.demo
    user_ids, later = {}, {}
    for user in demo.users:
        plain = {k: v for k, v in user.values.items() if not isinstance(v, dict)}
        record = add_user(service, user.user_name, user.password, list(user.roles), plain)
        user_ids[user.user_name] = record["sys_id"]
        refs = {k: v for k, v in user.values.items() if isinstance(v, dict)}
        if refs:  # generated records: given once the generators have made them
            later[record["sys_id"]] = {k: demo_sys_id(v["ref"], v.get("row", 1) - 1) for k, v in refs.items()}
    counts = {g.name: generator_count(g, scale) for g in demo.generators}
    written: dict[str, int] = {}
    stamp = now()
    try:
        with service.deferred_references(), service.by_definitions():  # declared data: any field, any state
            for gen in demo.generators:
                try:
                    written[gen.name] = service.insert_many(gen.table, generated_rows(gen, counts, user_ids, stamp))
                except RecordError as exc:
                    raise DemoError(gen.name, exc.row, exc.field, exc.message) from None
    except RecordError as exc:  # a reference to a record that is not there, found once every row is in
        dangling = _dangling(service, demo.generators, counts, user_ids, stamp)
        raise dangling or DemoError("(a reference)", None, exc.field, exc.message) from None
    with service.by_definitions():
        for sys_id, values in later.items():
            service.update("sys_user", sys_id, values)
    meta = service.storage.internal("sys_meta")
    if not demo_loaded(service):
        service.conn.execute(sa.insert(meta).values(name=MARKER, value=str(scale)))
    return written


def generated_rows(gen: DemoGenerator, counts: dict, users: dict, stamp: dt.datetime,
                   sys_ids: SysIds = demo_sys_id) -> Iterator[dict]:
    """The generator's rows, each row's values made in the order they are given (an `after` value
    reads the row's values above it)."""
    makers = []
    for name, spec in gen.values.items():
        try:
            makers.append((name, _maker(spec, counts, users, stamp, sys_ids)))
        except (KeyError, ValueError) as exc:
            raise DemoError(gen.name, None, name, f"cannot make values from {spec!r}: {_why(exc)}") from None
    for i in range(counts[gen.name]):
        row: dict[str, Any] = {}
        try:
            for name, make in makers:
                row[name] = make(i, row)
        except Exception as exc:  # whatever a value spec raised: `name` is the field it was making
            raise DemoError(gen.name, i + 1, name, _why(exc)) from None
        row["sys_id"] = sys_ids(gen.name, i)
        yield row


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError) else str(exc)


def _dangling(service: RecordService, generators, counts: dict, users: dict, stamp: dt.datetime) -> DemoError | None:
    """The first generated reference (generator, row, field) to a record that does not exist,
    looked for again row by row (in slices of DANGLING_SLICE) once the load has failed."""
    for gen in generators:
        tdef = service.defs.tables[gen.table]
        fields = [tdef.fields[name] for name in gen.values if tdef.fields[name].type == "reference"]
        rows = enumerate(generated_rows(gen, counts, users, stamp), start=1)
        while fields and (chunk := list(itertools.islice(rows, DANGLING_SLICE))):
            for field in fields:
                found = service.existing_ids(field.reference, {r[field.name] for _, r in chunk if r[field.name]})
                row, value = next(((n, r[field.name]) for n, r in chunk if r[field.name] and r[field.name] not in found),
                                  (None, None))
                if row is not None:
                    return DemoError(gen.name, row, field.name, f"no {field.reference} record has sys_id {value}")
    return None


def locate(error: DemoError, folder: str | Path, files: Iterable[DefinitionFile]) -> DemoError:
    """The error with the place its generator's value is declared (PATH:LINE:COL), read from the
    demo files of the definitions folder; a cycle's item is the one the row used."""
    for file in files:
        if file.kind != "demo":
            continue
        path = Path(folder) / file.path
        try:
            doc = parse_yaml(path.read_text(encoding="utf-8"), str(path))
        except (OSError, UnicodeDecodeError, DefinitionError):
            continue  # changed since the definitions loaded: the message stands without a place
        demo = doc.data.get("demo") if isinstance(doc.data, dict) else None
        for k, spec in enumerate((demo or {}).get("generate") or ()):
            if isinstance(spec, dict) and spec.get("name") == error.generator:
                return error.at(str(doc.where(*_value_keys(("demo", "generate", k), spec, error))))
    return error


def _value_keys(where: tuple, spec: dict, error: DemoError) -> tuple:
    """The keys of the value that made the failing row's field (a cycle's item: the one the row used)."""
    values = spec.get("values") or {}
    if error.field not in values:
        return where
    value = values[error.field]
    if isinstance(value, dict) and value.get("cycle") and error.row:
        return where + ("values", error.field, "cycle", (error.row - 1) % len(value["cycle"]))
    return where + ("values", error.field)


Maker = Callable[[int, dict], Any]  # a row's index and its values made so far, to one field's value


def _maker(spec: Any, counts: dict, users: dict, stamp: dt.datetime, sys_ids: SysIds) -> Maker:
    """A function of the row index (and of the row's values above this one) for one value spec, built
    once per generator."""
    if isinstance(spec, str) and "{i}" in spec:
        head, _, tail = spec.partition("{i}")
        return lambda i, row: f"{head}{i + 1}{tail}".replace("{i}", str(i + 1))
    if not isinstance(spec, dict):
        return lambda i, row: spec
    if "cycle" in spec:
        makers = [_maker(item, counts, users, stamp, sys_ids) for item in spec["cycle"]]
        return lambda i, row: makers[i % len(makers)](i, row)
    if "ref" in spec:
        total, every, name = counts[spec["ref"]], spec.get("every", 1), spec["ref"]
        ids: dict[int, str] = {}
        return lambda i, row: (ids.setdefault((i // every) % total, sys_ids(name, (i // every) % total))
                               if total else None)
    if "user" in spec:
        user = users[spec["user"]]
        return lambda i, row: user
    if "days_ago" in spec:
        days = spec["days_ago"]
        return lambda i, row: stamp - dt.timedelta(days=i % days, hours=i % 24, minutes=i % 60)
    if "after" in spec:
        start, hours = spec["after"], spec["within_hours"]
        return lambda i, row: _after(row[start], i, hours, stamp)
    raise ValueError(f"unknown demo value {spec!r}")


def _after(start: Any, i: int, hours: int, stamp: dt.datetime) -> dt.datetime | None:
    """`{after: FIELD, within_hours: H}` for row `i` (0 is the first): FIELD's value (a date-time, a
    date or its text) plus (i × 37 mod H) hours and 1 + i mod 59 minutes, so within H hours; never past
    the load's moment `stamp` (nothing closes in the future), nor before FIELD's value. Empty when
    FIELD is."""
    begun = FIELD_TYPES["datetime"].parse(None, start)
    if begun is None:
        return None
    later = begun + dt.timedelta(hours=i * 37 % hours, minutes=1 + i % 59)
    return max(begun, min(later, stamp))
