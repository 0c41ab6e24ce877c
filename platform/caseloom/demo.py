"""Demo data from the definitions' `demo:` files, scaled by --accounts, written set-based.

Generated rows get deterministic sys_ids, so a generator can reference another's rows
by index before they exist (accounts and their primary contacts point at each other);
reference checks are deferred to the end of the load.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa

from .definitions.model import DemoGenerator
from .records import RecordService, now
from .users import add_user

MARKER = "demo_loaded"


def demo_sys_id(generator: str, index: int) -> str:
    return hashlib.md5(f"caseloom-demo:{generator}:{index}".encode()).hexdigest()


def generator_count(gen: DemoGenerator, accounts: int) -> int:
    if gen.count is not None:
        return gen.count
    return max(1, int(accounts * gen.per_account)) if accounts > 0 else 0


def demo_loaded(service: RecordService) -> bool:
    meta = service.storage.internal("sys_meta")
    return service.conn.execute(sa.select(meta.c.value).where(meta.c.name == MARKER)).scalar() is not None


def load_demo(service: RecordService, accounts: int = 200) -> dict[str, int]:
    """Create the demo users and generated rows; returns rows written per generator."""
    demo = service.defs.demo
    user_ids = {}
    for user in demo.users:
        record = add_user(service, user.user_name, user.password, list(user.roles), dict(user.values))
        user_ids[user.user_name] = record["sys_id"]
    counts = {g.name: generator_count(g, accounts) for g in demo.generators}
    written: dict[str, int] = {}
    stamp = now()
    with service.deferred_references(), service.by_definitions():  # declared data: any field, any state
        for gen in demo.generators:
            written[gen.name] = service.insert_many(gen.table, generated_rows(gen, counts, user_ids, stamp))
    meta = service.storage.internal("sys_meta")
    if not demo_loaded(service):
        service.conn.execute(sa.insert(meta).values(name=MARKER, value=str(accounts)))
    return written


def generated_rows(gen: DemoGenerator, counts: dict, users: dict, stamp: dt.datetime) -> Iterator[dict]:
    makers = [(name, _maker(spec, counts, users, stamp)) for name, spec in gen.values.items()]
    prefix = f"caseloom-demo:{gen.name}:"
    for i in range(counts[gen.name]):
        row = {name: make(i) for name, make in makers}
        row["sys_id"] = hashlib.md5(f"{prefix}{i}".encode()).hexdigest()
        yield row


def _maker(spec: Any, counts: dict, users: dict, stamp: dt.datetime) -> Callable[[int], Any]:
    """A function of the row index for one value spec, built once per generator."""
    if isinstance(spec, str) and "{i}" in spec:
        head, _, tail = spec.partition("{i}")
        return lambda i: f"{head}{i + 1}{tail}".replace("{i}", str(i + 1))
    if not isinstance(spec, dict):
        return lambda i: spec
    if "cycle" in spec:
        makers = [_maker(item, counts, users, stamp) for item in spec["cycle"]]
        return lambda i: makers[i % len(makers)](i)
    if "ref" in spec:
        total, every, name = counts[spec["ref"]], spec.get("every", 1), spec["ref"]
        ids: dict[int, str] = {}
        return lambda i: (ids.setdefault((i // every) % total, demo_sys_id(name, (i // every) % total))
                          if total else None)
    if "user" in spec:
        user = users[spec["user"]]
        return lambda i: user
    if "days_ago" in spec:
        days = spec["days_ago"]
        return lambda i: stamp - dt.timedelta(days=i % days, hours=i % 24, minutes=i % 60)
    raise ValueError(f"unknown demo value {spec!r}")
