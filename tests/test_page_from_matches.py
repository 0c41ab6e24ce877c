"""A page of a counted condition with few matches is read from the matches (RecordService.query's
`matching`, query/compile.py `_page_from_matches`): on PostgreSQL a list, the Table API, a related
list, a reference picker, a report and a portal list count first, and when the count is
FEW_MATCHES or fewer the page's keys are found first and only the page's rows are read whole.

The page must be the one the plain read gives, for every order, offset and user: dot-walked sort
keys, a field read under a condition (sorted as empty where it does not match), a row rule, and a
dot-walk into a table whose rule hides some of its records. On both databases (the form is plain
SQL; only PostgreSQL's lists use it, SQLite's planner does not need it)."""

from __future__ import annotations

import html
import re
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from caseloom import records as records_module
from caseloom.access import Actor
from caseloom.query import Query, parse_encoded
from caseloom.query.compile import select_rows
from small_app import small_app

FILES = {
    "tables/x_team.yaml": "table: x_team\ndisplay: name\nfields:\n  name: {type: string}\n"
                          "  open: {type: boolean, default: true}\nlist: [name, open]\nform: [name, open]\n",
    "tables/x_note.yaml": "table: x_note\ndisplay: title\ntext_index: [title, body]\nfields:\n"
                          "  title: {type: string}\n  body: {type: string}\n  team: {type: reference, to: x_team}\n"
                          "  rank: {type: integer}\n  secret: {type: string}\n  shown: {type: boolean, default: true}\n"
                          "list: [title, team, rank, secret]\nform: [title, body, team, rank, secret, shown]\n",
    "roles.yaml": "roles:\n  x_reader: {}\n",
    "access/x.yaml": "access:\n"
                     "  - {table: x_note, operations: [read], roles: [x_reader], condition: \"shown=true\"}\n"
                     "  - {table: x_note.secret, operations: [read], roles: [x_reader], condition: \"rank<5\"}\n"
                     "  - {table: x_team, operations: [read], roles: [x_reader], condition: \"open=true\"}\n",
}
USERS = {"reader": ["x_reader"], "admin": ["admin"]}
COLUMNS = ["sys_id", "title", "team.name", "rank", "secret"]
WORD = "alpha"  # in the titles of 8 notes of 30, one of them hidden from the reader


@pytest.fixture
def notes(config, tmp_path):
    with small_app(config, tmp_path, FILES, USERS) as small:
        with small.runtime.transaction() as service:
            teams = [service.insert("x_team", {"name": f"team {i}", "open": i % 3 != 0})["sys_id"] for i in range(6)]
            service.insert_many("x_note", [
                {"title": f"{WORD if i % 4 == 1 else 'beta'} note {i:02d}", "body": f"body of note {i}",
                 "team": teams[i % 6], "rank": (i * 7) % 10, "secret": f"secret {i % 5}", "shown": i != 5}
                for i in range(30)])
        yield small


def actor_of(small, user: str) -> Actor:
    return Actor(user, small.runtime.defs.role_closure(USERS[user]))


def read(small, user: str, query: Query, limit: int, offset: int, from_matches: bool) -> list[dict]:
    with small.runtime.transaction(actor_of(small, user)) as service:
        stmt, _ = select_rows(service.storage, "x_note", query, COLUMNS, limit, offset, service.readable,
                              from_matches=from_matches)
        return [dict(r) for r in service.conn.execute(stmt).mappings()]


ORDERS = {
    "none (sys_id)": "",
    "rank descending, then title": "^ORDERBYDESCrank^ORDERBYtitle",
    "a dot-walk, then title descending": "^ORDERBYteam.name^ORDERBYDESCtitle",
    "a field read under a condition, then title": "^ORDERBYsecret^ORDERBYtitle",
}
CONDITIONS = {"keywords": f"123TEXTQUERY321={WORD}", "a plain filter": "rank>2", "every record": ""}


def test_a_page_read_from_its_matches_is_the_page_read_directly(notes):
    """Every user, order, condition and offset of the tables above (one app: each would cost a second)."""
    differ = []
    for user in USERS:
        for order_name, order in ORDERS.items():
            for condition_name, condition in CONDITIONS.items():
                for offset in (0, 3, 40):
                    query = parse_encoded(condition + order)
                    direct = read(notes, user, query, 4, offset, from_matches=False)
                    if read(notes, user, query, 4, offset, from_matches=True) != direct or \
                            len(direct) != (4 if offset < 40 else 0):
                        differ.append((user, order_name, condition_name, offset))
    assert differ == []


def test_what_the_reader_sees_through_a_page_from_the_matches(notes):
    """The row rule, the field under a condition and the hidden team hold in the new form too."""
    rows = read(notes, "reader", parse_encoded(f"123TEXTQUERY321={WORD}^ORDERBYtitle"), 10, 0, from_matches=True)
    assert [r["title"] for r in rows] == [f"alpha note {i:02d}" for i in (1, 9, 13, 17, 21, 25, 29)]  # not 05
    for r in rows:
        number = int(r["title"][-2:])
        assert r["secret"] == (f"secret {number % 5}" if number * 7 % 10 < 5 else None)
        assert r["team.name"] == (None if number % 6 % 3 == 0 else f"team {number % 6}")


def statements(small) -> list[str]:
    from caseloom.web import db

    seen: list[str] = []
    with small.app.app_context():
        sa.event.listen(db.engine, "before_cursor_execute", lambda conn, cursor, statement, *rest: seen.append(statement))
    return seen


def list_titles(small) -> list[str]:
    page = small.client.get(f"/x_note_list.do?sysparm_search={WORD}&sysparm_query=ORDERBYDESCtitle")
    assert page.status_code == 200
    text = html.unescape(page.get_data(as_text=True))
    assert re.sub(r"<[^>]+>", "", re.search(r'<span class="count">(.*?)</span>', text).group(1)) == "1–7 of 7"
    return re.findall(r'<a href="/x_note\.do\?sys_id=\w+">([^<]+)</a>', text)


def api_titles(small) -> list[str]:
    api = small.api("reader")
    answer = api.client.get(f"/api/now/table/x_note?sysparm_fields=title&sysparm_limit=4&sysparm_query="
                            f"{quote(f'123TEXTQUERY321={WORD}^ORDERBYDESCtitle')}", headers=api.headers)
    assert answer.status_code == 200 and answer.headers["X-Total-Count"] == "7", answer.get_data(as_text=True)
    return [r["title"] for r in answer.json["result"]]


PAGES = {"the list": list_titles, "the Table API": api_titles}


def test_a_list_counts_first_and_reads_few_matches_from_themselves(notes, monkeypatch):
    """Seven of the reader's notes match: with FEW_MATCHES at 10 PostgreSQL reads the page from them,
    at 3 as before; SQLite never. The reader sees the same page either way."""
    notes.sign_in("reader")
    postgres = notes.runtime.engine.dialect.name == "postgresql"
    seen = statements(notes)
    for name, page in PAGES.items():
        for few in (10, 3):
            monkeypatch.setattr(records_module, "FEW_MATCHES", few)
            seen.clear()
            titles = page(notes)
            assert titles[:4] == [f"alpha note {i:02d}" for i in (29, 25, 21, 17)], (name, few)
            pages = [s for s in seen if "FROM x_note" in s.replace('"', "") and "count(" not in s.lower()]
            assert any("AS matches" in s for s in pages) == (postgres and few == 10), (name, few, pages)
