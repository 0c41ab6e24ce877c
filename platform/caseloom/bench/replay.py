"""The baselines of the write benchmarks: the same rows, written the plainest way.

After a measured run, the rows it wrote are read back and compared with a snapshot taken just
before it; the baseline then writes exactly those differences into the snapshot with the plain
driver's executemany (INSERT of the new rows, UPDATE ... WHERE sys_id = ? of the changed
columns) in one transaction, and that is timed. So the baseline pays for the same rows, the
same indexes and the same commit, and nothing else: no validation, rules, numbering or progress.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

CHUNK = 20_000  # rows of a written table read and compared at a time


@dataclass
class NetWrites:
    inserts: dict[str, list[tuple]] = field(default_factory=dict)  # table -> rows (columns in `columns`)
    columns: dict[str, list[str]] = field(default_factory=dict)
    updates: dict[tuple[str, tuple[str, ...]], list[tuple]] = field(default_factory=lambda: defaultdict(list))
    deletes: dict[str, list[tuple]] = field(default_factory=dict)  # table -> (sys_id,) of the rows gone

    @property
    def rows(self) -> int:
        return (sum(map(len, self.inserts.values())) + sum(map(len, self.updates.values()))
                + sum(map(len, self.deletes.values())))


def net_writes(after, before, tables: list[str], since, mark: str, deleted_from: tuple[str, ...] = ()) -> NetWrites:
    """What changed in `tables` between the snapshot (`before`) and now (`after`): rows whose
    sys_updated_on is at or after `since` (both plain DB-API connections). The rows are read and
    compared CHUNK at a time, so only the differences are held: a million children's close reads
    millions of wide rows. In `deleted_from` (tables a benchmark deletes from) the rows of the
    snapshot that are gone are found too, by comparing the two tables' sys_ids."""
    writes = NetWrites()
    for table in deleted_from:
        kept = {row[0] for _, rows in _chunks(after, f'SELECT sys_id FROM "{table}"', ()) for row in rows}
        gone = [row for _, rows in _chunks(before, f'SELECT sys_id FROM "{table}"', ()) for row in rows
                if row[0] not in kept]
        if gone:
            writes.deletes[table] = [tuple(row) for row in gone]
    for table in tables:
        for columns, rows in _chunks(after, f'SELECT * FROM "{table}" WHERE sys_updated_on >= {mark}', (since,)):
            key = columns.index("sys_id")
            old = _rows_by_id(before, table, [r[key] for r in rows], mark)
            new_rows = [r for r in rows if r[key] not in old]
            if new_rows:
                writes.inserts.setdefault(table, []).extend(new_rows)
                writes.columns[table] = columns
            for row in rows:
                previous = old.get(row[key])
                if previous is None:
                    continue
                changed = [i for i, (a, b) in enumerate(zip(row, previous, strict=True)) if a != b]
                if changed:
                    names = tuple(columns[i] for i in changed)
                    writes.updates[(table, names)].append(tuple(row[i] for i in changed) + (row[key],))
    return writes


def _chunks(conn, sql: str, params: tuple) -> Iterator[tuple[list[str], list[tuple]]]:
    """The rows of a query CHUNK at a time, with the columns a write sets. On PostgreSQL through a
    server-side cursor, so neither the driver nor the client holds the whole result."""
    if hasattr(conn, "transaction"):  # psycopg: a named cursor lives in a transaction
        with conn.transaction(), conn.cursor(name="net_writes") as cur:
            yield from _fetched(cur, sql, params)
    else:
        yield from _fetched(conn.cursor(), sql, params)


def _fetched(cur, sql: str, params: tuple) -> Iterator[tuple[list[str], list[tuple]]]:
    cur.execute(sql, params)
    while rows := cur.fetchmany(CHUNK):
        yield _written_columns(cur.description, rows)


def _written_columns(description, rows: list) -> tuple[list[str], list[tuple]]:
    """The columns a write sets and the rows' values of them: a generated column (PostgreSQL's text
    index, caseloom.textindex) is the database's to compute, on the baseline's writes too."""
    from ..textindex import PG_COLUMN

    names = [d[0] for d in description]
    kept = [i for i, name in enumerate(names) if name != PG_COLUMN]
    if len(kept) == len(names):
        return names, rows
    return [names[i] for i in kept], [tuple(r[i] for i in kept) for r in rows]


def _rows_by_id(conn, table: str, ids: list, mark: str) -> dict:
    found = {}
    cur = conn.cursor()
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        cur.execute(f'SELECT * FROM "{table}" WHERE sys_id IN ({", ".join([mark] * len(chunk))})', chunk)
        columns, rows = _written_columns(cur.description, cur.fetchall())
        key = columns.index("sys_id")
        found.update((r[key], r) for r in rows)
    return found


def replay(conn, writes: NetWrites, mark: str) -> float:
    """Write `writes` into `conn` (a snapshot) with executemany in one transaction; seconds taken."""
    cur = conn.cursor()
    started = time.perf_counter()
    cur.execute("BEGIN")
    for table, rows in writes.deletes.items():
        cur.executemany(f'DELETE FROM "{table}" WHERE sys_id = {mark}', rows)
    for table, rows in writes.inserts.items():
        columns = writes.columns[table]
        names = ", ".join(f'"{c}"' for c in columns)
        cur.executemany(f'INSERT INTO "{table}" ({names}) VALUES ({", ".join([mark] * len(columns))})', rows)
    for (table, changed), rows in writes.updates.items():
        sets = ", ".join(f'"{c}" = {mark}' for c in changed)
        cur.executemany(f'UPDATE "{table}" SET {sets} WHERE sys_id = {mark}', rows)
    cur.execute("COMMIT")
    return time.perf_counter() - started
