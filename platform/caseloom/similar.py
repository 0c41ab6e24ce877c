"""Similar records: the records whose indexed text (the table's `text_index`) shares the most, by
rarity, of one record's words, each with a score from 0 to 1 against the record itself.

A raw bm25 or ts_rank value depends on the query, so it cannot be compared between two records'
searches or held to a threshold. The score here can:

- The record's **terms** are the distinct words of its indexed fields, without English stop words
  (PostgreSQL's list, used on both databases so both weigh the same words), at most 32.
- Each term's **weight** is its rarity among the other records: `ln(1 + WINDOW / n)`, where `n` is how
  many other records have it (counted by the text index, up to WINDOW). A term no other record has
  tells nothing about which records are alike, so it is left out.
- A record's **score** is the weight of the terms it shares over the weight of all of them: 1 for a
  record with every term (the record against itself), 0 for one with none.

Each term's postings are read from the text index newest first, at most WINDOW of them, so a search
costs at most terms × WINDOW index entries whatever the table's size; a record older than the
WINDOW newest holders of a term is not credited with it. The candidates are then filtered in SQL by
the caller's condition and the user's read access, scored, and the best returned.

Two ways of reading less give the same results: with a threshold, the lightest terms are read only
as far back as the oldest record holding one of the others (`_optional`); on PostgreSQL, whose text
index has no order, the common terms' newest holders come from one walk down the primary key for
all of them (`_walkable`, `_pg_scores`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from . import textindex
from .definitions.model import Setting, SimilarDef
from .query import Selection, parse_encoded
from .query.nodes import All, Node, Term
from .storage import Storage
from .templates import render

WINDOW = 2000  # postings read per term, newest first; also where a term's count stops
CAPPED = math.log(2) + 1e-12  # the weight of a term with WINDOW other holders or more
WALK_SHARE = 0.02  # PostgreSQL: a common term held by this share of the records is read by walking them
MAX_TERMS = 32
MAX_SUGGESTION_COUNT = 1000  # similar records a suggestion counts, at most

# PostgreSQL's English stop words (tsearch_data/english.stop): dropped on both databases
STOPWORDS = frozenset("""
i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers herself it
its itself they them their theirs themselves what which who whom this that these those am is are was were be been
being have has had having do does did doing a an the and but if or because as until while of at by for with about
against between into through during before after above below to from up down in out on off over under again further
then once here there when where why how all any both each few more most other some such no nor not only own same so
than too very s t can will just don should now
""".split())


@dataclass(frozen=True)
class Match:
    sys_id: str
    score: float
    row: dict  # the columns asked for, by path


def terms(text: str) -> list[str]:
    """The distinct words of `text` a similarity search weighs: lower-cased, no stop words, at most 32."""
    found = dict.fromkeys(w for w in textindex.words(text + " ") if w not in STOPWORDS)
    return list(found)[:MAX_TERMS]


# the text column's most common lexemes and their shares of the records, as ANALYZE found them (:sim_root)
_STATISTICS = [
    f"(SELECT most_common_elems::text::text[] FROM pg_stats WHERE schemaname = current_schema() "
    f"AND tablename = :sim_root AND attname = '{textindex.PG_COLUMN}')",
    f"(SELECT most_common_elem_freqs FROM pg_stats WHERE schemaname = current_schema() "
    f"AND tablename = :sim_root AND attname = '{textindex.PG_COLUMN}')"]


class Weights(dict):
    """Terms and their weights; on PostgreSQL also which terms one walk reads (`walkable`: their tsqueries),
    found by the statement that counted them."""

    walkable: dict[str, str] | None = None


def weights(storage: Storage, conn: sa.Connection, table: str, found: Sequence[str], indexed: bool) -> Weights:
    """Each term's weight among the records other than the one the text is from (`indexed`: that record
    is in the index, so every count includes it once); terms no other record has are left out."""
    out = Weights()
    if not found:
        return out
    root = storage.defs.tables[table].root
    params: dict = {"sim_cap": WINDOW + 1}
    parts = []
    for i, term in enumerate(found):
        params[f"sim_q{i}"] = _query_text(conn, term)
        parts.append(f"({_count_sql(conn, root, i)}) AS c{i}")
    postgresql = conn.dialect.name == "postgresql"
    if postgresql:  # each term's tsquery, and the statistics that tell which terms to walk
        params["sim_root"] = root
        parts += [f"plainto_tsquery('{textindex.LANGUAGE}', :sim_q{i})::text" for i in range(len(found))]
        parts += _STATISTICS
    row = conn.execute(sa.text("SELECT " + ", ".join(parts)), params).one()
    for term, count in zip(found, row[:len(found)], strict=True):
        others = count - 1 if indexed and count else count
        if others >= 1:
            out[term] = math.log(1 + WINDOW / min(others, WINDOW))
    if postgresql:
        queries = dict(zip(found, row[len(found):2 * len(found)], strict=True))
        out.walkable = _walkable(out, queries, *row[2 * len(found):])
    return out


def find(storage: Storage, conn: sa.Connection, table: str, text: str, *, exclude: str | None = None,
         where: Node | None = None, min_score: float = 0.0, limit: int = 10, columns: Sequence[str] = (),
         readable=None, weighted: dict[str, float] | None = None) -> list[Match]:
    """The records of `table` most similar to `text` (the text of record `exclude` when it is given, which
    is then never among them), those matching `where` and readable by `readable` (None: every record),
    with a score of at least `min_score`; best first, then newest; with the `columns` asked for.
    `weighted`: the text's weights when the caller has them already (several lists of one record)."""
    if weighted is None:
        weighted = weights(storage, conn, table, terms(text), indexed=exclude is not None)
    total = sum(weighted.values())
    if not weighted or limit <= 0:
        return []
    root = storage.defs.tables[table].root
    floor = max(min_score, 0.0) * total - 1e-9
    optional = _optional(weighted, floor)
    walked = getattr(weighted, "walkable", None) or {}  # PostgreSQL's, found with the counts (`weights`)
    if walked:
        scored = _pg_scores(conn, root, weighted, optional, walked, floor, exclude)
        if not scored:
            return []
        # the keys as one text (sys_ids are hex): an array of 2,000 strings is quoted one by one
        scores = (sa.text("SELECT rid, s FROM unnest(string_to_array(CAST(:sim_ids AS text), ','), "
                          "CAST(:sim_scores AS double precision[])) AS sim(rid, s)")
                  .bindparams(sim_ids=",".join(scored), sim_scores=list(scored.values()))
                  .columns(sa.column("rid"), sa.column("s", sa.Float)).subquery("similar_scores"))
    else:
        scores = _scores_sql(conn, root, weighted, optional, floor, exclude)
    return _best(storage, conn, table, scores, total, exclude=exclude, where=where, limit=limit, columns=columns,
                 readable=readable)


def _scores_sql(conn: sa.Connection, root: str, weighted: dict[str, float], optional: set[str], floor: float,
                exclude: str | None):
    """The records scoring at least `floor` (rid, s), in SQL: each term's newest holders by the text index,
    the optional terms' only as far back as the oldest of the others' other than `exclude` (the record
    whose similar records these are, never one of them: an old record's own key would have them read back
    to it)."""
    params: dict = {"sim_cap": WINDOW, "sim_floor": floor}
    hits, later = [], []
    for i, (term, weight) in enumerate(weighted.items()):
        params[f"sim_q{i}"] = _query_text(conn, term)
        params[f"sim_w{i}"] = weight
        if term in optional:
            later.append(_hits_sql(conn, root, i, since="(SELECT lo FROM sim_lo)"))
        else:
            hits.append(_hits_sql(conn, root, i))
    if later:  # the other terms' holders, read only as far back as the oldest candidate
        params["sim_exclude"] = exclude or ""
        other = ("rid <> :sim_exclude" if conn.dialect.name == "postgresql"  # rid: the row's sys_id, or its rowid
                 else f'rid IS NOT (SELECT rowid FROM "{root}" WHERE sys_id = :sim_exclude)')
        sql = (f"WITH sim_e AS ({' UNION ALL '.join(hits)}), sim_lo AS (SELECT min(rid) AS lo FROM sim_e WHERE {other}) "
               f"SELECT rid, sum(w) AS s FROM (SELECT rid, w FROM sim_e UNION ALL {' UNION ALL '.join(later)}) AS u "
               "GROUP BY rid HAVING sum(w) >= :sim_floor")
    else:
        sql = f"SELECT rid, sum(w) AS s FROM ({' UNION ALL '.join(hits)}) AS u GROUP BY rid HAVING sum(w) >= :sim_floor"
    return (sa.text(sql).bindparams(**params).columns(sa.column("rid"), sa.column("s", sa.Float))
            .subquery("similar_scores"))


def _best(storage: Storage, conn: sa.Connection, table: str, scores, total: float, *, exclude, where, limit,
          columns, readable) -> list[Match]:
    """The best `limit` of the scored records (`scores`: rid, s) that match `where` and `readable` may read."""
    sel = Selection(storage, table, readable=readable)
    if exclude is not None:
        where = All((where, Term("sys_id", "ne", exclude))) if where is not None else Term("sys_id", "ne", exclude)
    condition = sel.condition(where)
    cols = [sel.column(path)[0].label(path) for path in columns if path != "sys_id"]
    key = sa.literal_column(f"{sel.base.name}.rowid") if conn.dialect.name == "sqlite" else sel.base.c.sys_id
    stmt = (sa.select(sel.base.c.sys_id.label("sys_id"), scores.c.s.label("similar_score"), *cols)
            .select_from(sel.from_clause.join(scores, key == scores.c.rid))
            .order_by(scores.c.s.desc(), sel.base.c.sys_created_on.desc(), sel.base.c.sys_id).limit(limit))
    if condition is not None:
        stmt = stmt.where(condition)
    out = []
    for row in conn.execute(stmt).mappings():
        values = dict(row)
        raw = values.pop("similar_score")
        out.append(Match(values["sys_id"], round(min(1.0, raw / total), 4), values))
    return out


def _query_text(conn: sa.Connection, term: str) -> str:
    return f'"{term}"' if conn.dialect.name == "sqlite" else term


def _count_sql(conn: sa.Connection, root: str, i: int) -> str:
    if conn.dialect.name == "sqlite":
        fts = f"{root}_text"
        return f'SELECT count(*) FROM (SELECT 1 FROM "{fts}" WHERE "{fts}" MATCH :sim_q{i} LIMIT :sim_cap)'
    return (f'SELECT count(*) FROM (SELECT 1 FROM "{root}" WHERE {textindex.PG_COLUMN} @@ '
            f"plainto_tsquery('{textindex.LANGUAGE}', :sim_q{i}) LIMIT :sim_cap) AS n{i}")


def _walkable(weighted: dict[str, float], queries: dict[str, str], elems: list | None,
              shares: list | None) -> dict[str, str]:
    """The terms (PostgreSQL) whose newest holders one walk down the primary key reads for all of them at
    once, each with its tsquery: those with more than WINDOW holders that the table's statistics count
    in at least WALK_SHARE of its records (ANALYZE's most common elements of the text column). Each
    term's walk of its own reads the same newest records again, and a walk reads every record on its
    way: after a major case's 100,000 children, that is 100,000 records per common word. A rarer term's
    holders are fewer to read by the text index."""
    share = dict(zip(elems or [], shares or [], strict=False))  # the shares end with three summary numbers
    out = {}
    for term, weight in weighted.items():
        query = queries.get(term) or ""
        lexeme = query[1:-1] if query.count("'") == 2 else None  # one lexeme: 'word'
        if weight <= CAPPED and lexeme is not None and share.get(lexeme, 0.0) >= WALK_SHARE:
            out[term] = query
    return out


def _pg_scores(conn: sa.Connection, root: str, weighted: dict[str, float], optional: set[str],
               walked: dict[str, str], floor: float, exclude: str | None) -> dict[str, float]:
    """The records scoring at least `floor`, with their scores: the terms not walked by the text index (one
    statement), the walked ones by one walk down the primary key, newest first, in chunks, each record read
    once for all of them, until each has its WINDOW newest holders (an optional term: or the walk has
    reached the oldest candidate other than `exclude`, the record whose similar records these are). Keys
    are compared by the database only (its collation orders them)."""
    terms = list(weighted)
    index = {t: i for i, t in enumerate(terms)}
    held: dict[str, int] = {}  # each record's terms, as bits in `terms` order
    oldest_rest = None  # the oldest holder of an essential term not walked
    rest = [i for i, t in enumerate(terms) if t not in walked]
    if rest:
        params: dict = {"sim_cap": WINDOW, "sim_essential": [i for i in rest if terms[i] not in optional],
                        "sim_exclude": exclude or ""}
        parts = []
        for i in rest:
            params[f"sim_q{i}"] = terms[i]
            parts.append(f"SELECT {i} AS t, sys_id FROM ({_newest_pg(root, i)}) AS h{i}")
        sql = ("SELECT t, sys_id, min(CASE WHEN t = ANY(CAST(:sim_essential AS integer[])) AND sys_id <> :sim_exclude "
               f"THEN sys_id END) OVER () FROM ({' UNION ALL '.join(parts)}) AS u")
        for row in conn.execute(sa.text(sql), params):
            i, rid, oldest_rest = row
            held[rid] = held.get(rid, 0) | (1 << i)
    got = dict.fromkeys(walked, 0)
    essential = [t for t in walked if t not in optional]
    essential_bits = sum(1 << index[t] for t in essential)
    oldest_walked = None  # the last (oldest) holder of an essential term the walk met
    after, size = None, WINDOW
    while wanted := [t for t in walked if got[t] < WINDOW]:
        bound = None
        if all(got[t] >= WINDOW for t in essential):  # what is left: optional terms, back to the oldest candidate
            if oldest_rest is None:
                break  # the walk is past every candidate it found (they are the only ones)
            bound = (oldest_rest, oldest_walked)
        rows = conn.execute(*_walk_sql(root, [(index[t], walked[t], got[t]) for t in wanted], after, size,
                                       bound)).all()
        if not rows:
            break
        for rid, bits, _totals, _walked, _last in rows:
            if bits:
                held[rid] = held.get(rid, 0) | bits
                if bits & essential_bits:
                    oldest_walked = rid
        _, _, totals, walked_rows, last = rows[0]
        for t, total in zip(wanted, totals, strict=True):
            got[t] = min(WINDOW, got[t] + total)
        if walked_rows < size:
            break  # the walk reached the first record, or the oldest candidate
        after, size = last, size * 2
    out = {}
    scores: dict[int, float] = {}  # by the set of terms held, summed in one order: equal sets, equal sums
    for rid, bits in held.items():
        score = scores.get(bits)
        if score is None:
            score = scores[bits] = sum(weighted[t] for i, t in enumerate(terms) if bits & (1 << i))
        if score >= floor:
            out[rid] = score
    return out


def _walk_sql(root: str, wanted: list[tuple[int, str, int]], after: str | None, size: int,
              bound: tuple[str | None, str | None] | None) -> tuple[sa.TextClause, dict]:
    """One chunk of the walk: the next `size` records, newest first (before `after`), holding one of the
    `wanted` terms (bit, tsquery, holders credited so far), from the older of `bound` on when given.
    Each row: its key; the terms credited to it, as bits (a term is credited to its holders until it has
    WINDOW of them); and, the same on every row, each term's holders in the chunk, the chunk's size and
    its last key. Only the rows credited with a term come back, and the first (for those totals)."""
    col = textindex.PG_COLUMN
    params: dict = {"size": size, "sim_cap": WINDOW}
    holds, credit, totals = [], [], []
    for i, query, got in wanted:
        params[f"wq{i}"], params[f"wg{i}"] = query, got
        holds.append(f"{col} @@ CAST(:wq{i} AS tsquery) AS b{i}")
        credit.append(f"(CASE WHEN b{i} AND :wg{i} + count(*) FILTER (WHERE b{i}) OVER w <= :sim_cap "
                      f"THEN {1 << i} ELSE 0 END)")
        totals.append(f"count(*) FILTER (WHERE b{i}) OVER ()")
    where = [f"{col} @@ ({' || '.join(f'CAST(:wq{i} AS tsquery)' for i, _, _ in wanted)})"]
    if after is not None:
        where.append("sys_id < :after")
        params["after"] = after
    if bound is not None:
        where.append("sys_id >= LEAST(CAST(:rest AS varchar), CAST(:walked AS varchar))")
        params["rest"], params["walked"] = bound
    sql = (f"SELECT sys_id, m, CASE WHEN r = 1 THEN totals END, n, last FROM (SELECT sys_id, {' + '.join(credit)} AS m, "
           f"ARRAY[{', '.join(totals)}] AS totals, count(*) OVER () AS n, min(sys_id) OVER () AS last, "
           f"row_number() OVER w AS r FROM (SELECT sys_id, {', '.join(holds)} FROM \"{root}\" "
           f"WHERE {' AND '.join(where)} ORDER BY sys_id DESC LIMIT :size) AS chunk WINDOW w AS (ORDER BY sys_id DESC)) "
           "AS credited WHERE m <> 0 OR r = 1 ORDER BY sys_id DESC")
    return sa.text(sql), params


def _optional(weighted: dict[str, float], floor: float) -> set[str]:
    """The lightest terms whose weights together stay under `floor`: a record having only these cannot
    score enough, so every record found has one of the others (MaxScore, as search engines prune). Only
    the others' holders make the candidates; these are read as far back as the oldest candidate only
    (a common word's WINDOW newest holders are mostly older than it), which credits each record the
    same as reading them all. Empty when every record counts (`floor` 0)."""
    out: set[str] = set()
    so_far = 0.0
    for term, weight in sorted(weighted.items(), key=lambda item: item[1]):
        if so_far + weight >= floor:
            break
        so_far += weight
        out.add(term)
    return out


def _hits_sql(conn: sa.Connection, root: str, i: int, since: str | None = None) -> str:
    """Term i's newest WINDOW holders, each with the term's weight; with `since` (an SQL expression), only
    those from that key on. Newest by sys_id on PostgreSQL (new sys_ids sort after older ones, see
    records.new_sys_id), as by rowid on SQLite: the primary key read backwards stops at a common term's
    WINDOW newest holders. By `sys_created_on`, which no index of the table orders alone, every holder
    was fetched and sorted first: 0.2 to 0.5 s for a word that a quarter of a million records or more
    have, 5 s for one record's similar list."""
    if conn.dialect.name == "sqlite":
        fts = f"{root}_text"
        after = f" AND rowid >= {since}" if since else ""
        return (f'SELECT rowid AS rid, :sim_w{i} AS w FROM (SELECT rowid FROM "{fts}" WHERE "{fts}" MATCH :sim_q{i}'
                f"{after} ORDER BY rowid DESC LIMIT :sim_cap)")
    return f"SELECT sys_id AS rid, CAST(:sim_w{i} AS double precision) AS w FROM ({_newest_pg(root, i, since)}) AS h{i}"


def _newest_pg(root: str, i: int, since: str | None = None) -> str:
    """PostgreSQL: the sys_ids of term i's (`:sim_q{i}`) WINDOW newest holders (`:sim_cap`), from `since` on."""
    after = f" AND sys_id >= {since}" if since else ""
    return (f'SELECT sys_id FROM "{root}" WHERE {textindex.PG_COLUMN} @@ '
            f"plainto_tsquery('{textindex.LANGUAGE}', :sim_q{i}){after} ORDER BY sys_id DESC LIMIT :sim_cap")


# -- a table's similar lists (SimilarDef): the form's panels, the API's default, suggestions ----------------------

def setting(props, value: Setting) -> float:
    """A definition's number, or its system property's value now."""
    return props.get(value.property) if value.property else value.value


def text_of(storage: Storage, table: str, values: dict) -> str:
    """The indexed text of a record's values (a pending insert's, a form's)."""
    fields = textindex.indexed_fields(storage, storage.defs.tables[table].root)
    return " ".join(str(values[f]) for f in fields if values.get(f))


def weights_of(storage: Storage, conn: sa.Connection, table: str, record: dict) -> Weights:
    """The weights of a stored record's words: what each of its similar lists' searches share."""
    return weights(storage, conn, table, terms(text_of(storage, table, record)), indexed=True)


def listed(storage: Storage, conn: sa.Connection, sdef: SimilarDef, record: dict, props, readable=None,
           columns: Sequence[str] = (), weighted: dict[str, float] | None = None) -> list[Match]:
    """The records a similar list shows for `record` (a stored one): its condition, score and limit."""
    return find(storage, conn, sdef.table, text_of(storage, sdef.table, record), exclude=record.get("sys_id"),
                where=sdef.condition, min_score=setting(props, sdef.min_score), limit=sdef.limit, columns=columns,
                readable=readable, weighted=weighted)


@dataclass(frozen=True)
class Suggestion:
    count: int  # similar records since the start of the day `days` ago
    groups: int  # their distinct `group_by` values
    days: int
    message: str
    action: str | None
    holder: str | None = None  # the similar record already holding a suggestion (kept in `field`), if any


def suggestion(storage: Storage, conn: sa.Connection, sdef: SimilarDef, values: dict, props, readable=None,
               exclude: str | None = None, weighted: dict[str, float] | None = None) -> Suggestion | None:
    """The suggestion a record with `values` raises, when enough similar records from enough groups arrived
    since the start of the day `since_days` ago (by the rule's `date_field`); None when not (or the list has none)."""
    rule = sdef.suggest
    if rule is None:
        return None
    days = int(setting(props, rule.since_days))
    recent = parse_encoded(f"{rule.date_field}>=javascript:gs.daysAgoStart({max(days, 0)})").where
    where = All((sdef.condition, recent)) if sdef.condition is not None else recent
    columns = [rule.group_by, *([rule.field] if rule.field else [])]
    hits = find(storage, conn, sdef.table, text_of(storage, sdef.table, values), exclude=exclude, where=where,
                min_score=setting(props, sdef.min_score), limit=MAX_SUGGESTION_COUNT, columns=columns,
                readable=readable, weighted=weighted)
    groups = {m.row[rule.group_by] for m in hits if m.row[rule.group_by] not in (None, "")}
    if len(hits) < setting(props, rule.min_records) or len(groups) < setting(props, rule.min_groups):
        return None
    message = render(rule.message, {"count": len(hits), "groups": len(groups), "days": days, "record": values})
    holder = next((m.sys_id for m in hits if rule.field and m.row[rule.field]), None)
    return Suggestion(len(hits), len(groups), days, message, rule.action, holder)


def suggest_after_insert(runtime, table: str, sys_id: str) -> None:
    """Once a record made one at a time, or one whose indexed text was changed by a single update, is
    committed (a queued task): each similar list's suggestion it raises is kept in the list's `field`,
    on the similar record already holding one (its counts brought up to date) or else on this one. As
    the system: the counts are of every record."""
    from .automation.conditions import unit_properties
    from .query.evaluate import evaluate
    from .setwrite import update_where

    with runtime.transaction(write_lock=True) as service:
        tdef = service.defs.tables.get(table)
        record = service.get(table, sys_id) if tdef is not None else None
        if record is None:
            return  # gone since, or its table with it
        tdef = service.defs.tables.get(record.get("sys_class_name"), tdef)
        weighted = None
        for sdef in tdef.similar:
            rule = sdef.suggest
            if rule is None or rule.field is None or (sdef.when is not None and not evaluate(sdef.when, record)):
                continue
            weighted = weighted if weighted is not None else weights_of(service.storage, service.conn, table, record)
            found = suggestion(service.storage, service.conn, sdef, record, unit_properties(service), exclude=sys_id,
                               weighted=weighted)
            if found is not None:
                update_where(service, service.defs.tables[sdef.table], Term("sys_id", "eq", found.holder or sys_id),
                             {rule.field: found.message})
