"""A list's total is exact up to `caseloom.list.exact_count_limit` and, above it on PostgreSQL, the
planner's estimate ("of about N", no last page); SQLite always counts exactly. The Table API's
X-Total-Count stays exact unless the client sends `Prefer: count=estimated`. Row rules apply either way.

The limit is set to 5 here. The reader may read only the shown items (a row rule); three hidden ones
are there for the administrator alone, so the reader's total is under the limit while the
administrator's, of the same table, is over it."""

from __future__ import annotations

import html
import re
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

from caseloom.query import Query, parse_encoded
from caseloom.query.total import EXACT_COUNT_LIMIT, total_rows
from small_app import small_app

LIMIT = 5
HIDDEN = 3
FILES = {
    "tables/x_item.yaml": "table: x_item\ndisplay: title\nfields:\n  title: {type: string}\n"
                          "  shown: {type: boolean, default: true}\nlist: [title, shown]\nform: [title, shown]\n",
    "roles.yaml": "roles:\n  x_reader: {}\n",
    "access/x.yaml": "access:\n  - {table: x_item, operations: [read], roles: [x_reader], condition: \"shown=true\"}\n",
}
USERS = {"reader": ["x_reader"], "admin": ["admin"]}
ITEMS = "/api/now/table/x_item"
ESTIMATE = {"Prefer": "count=estimated"}


def get(small, user: str, url: str, prefer: dict | None = None):
    """The Table API as `user`, with `prefer`'s headers beside the user's credentials."""
    api = small.api(user)
    return api.client.get(url, headers=api.headers | (prefer or {}))


def fill(small, shown: int, limit: int = LIMIT) -> None:
    """`shown` items the reader may read and HIDDEN more for the administrator, the exact-count limit at
    `limit`, and PostgreSQL's statistics gathered, so its estimate is stable."""
    rows = [{"title": f"item {i:02d}", "shown": True} for i in range(shown)]
    rows += [{"title": f"secret {i}", "shown": False} for i in range(HIDDEN)]
    with small.runtime.transaction() as service:
        service.insert_many("x_item", rows)
        prop = service.query("sys_properties", parse_encoded(f"name={EXACT_COUNT_LIMIT}"))[0]
        service.update("sys_properties", prop["sys_id"], {"value": str(limit)})
    if postgres(small):
        with small.runtime.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("ANALYZE"))


@pytest.fixture
def items(config, tmp_path, request):
    """The small app, filled as the test's parameter says: (shown,) or (shown, limit)."""
    with small_app(config, tmp_path, FILES, USERS) as small:
        fill(small, *request.param)
        yield small


def postgres(small) -> bool:
    return small.runtime.engine.dialect.name == "postgresql"


def pager(small, user: str, query: str = "") -> tuple[str, list[str]]:
    """The list's pager as its text (tags dropped) and the titles of the page's rows."""
    small.sign_in(user)
    page = html.unescape(small.client.get(f"/x_item_list.do?sysparm_query={query}ORDERBYtitle").get_data(as_text=True))
    nav = re.search(r'<nav class="pager".*?</nav>', page, re.S).group(0)
    titles = re.findall(r'<a href="/x_item\.do\?sys_id=\w+">([^<]+)</a>', page)
    return nav, titles


def pager_count(nav: str) -> str:
    return re.sub(r"<[^>]+>", "", re.search(r'<span class="count">(.*?)</span>', nav).group(1))


# -- the browser list ------------------------------------------------------------------------------

@pytest.mark.parametrize("items", [(LIMIT - 1,), (LIMIT,)], indirect=True, ids=["under", "at"])
def test_up_to_the_limit_a_list_counts_exactly_and_offers_its_last_page(items):
    shown = len(items.api("admin").get(f"{ITEMS}?sysparm_query=shown=true").json["result"])
    nav, titles = pager(items, "reader")
    assert pager_count(nav) == f"1–{shown} of {shown}"
    assert titles == [f"item {i:02d}" for i in range(shown)]  # the row rule: no secret
    assert '<input type="number" name="page" min="1" max="1" value="1" size="4"> of 1</label>' in nav
    assert "about" not in nav and 'rel="next"' not in nav


@pytest.mark.parametrize("items", [(LIMIT + 4,)], indirect=True, ids=["above"])
def test_above_the_limit_postgresql_says_about_the_estimate_and_sqlite_counts(items):
    nav, titles = pager(items, "reader")
    assert titles == [f"item {i:02d}" for i in range(LIMIT + 4)]  # the page itself is exact
    if not postgres(items):
        assert pager_count(nav) == f"1–{LIMIT + 4} of {LIMIT + 4}" and 'max="1"' in nav
        return
    about = re.fullmatch(rf"1–{LIMIT + 4} of about ([\d,]+)", pager_count(nav))
    assert about, nav
    # the planner's estimate of the reader's rows: over the limit, never beyond the table after ANALYZE
    assert LIMIT + 4 <= int(about.group(1).replace(",", "")) <= LIMIT + 4 + HIDDEN
    # no last page to go to from a guess: the page box has no maximum and says "of about"
    assert '<input type="number" name="page" min="1" value="1" size="4"> of about 1</label>' in nav
    assert " max=" not in nav and 'rel="next"' not in nav  # the page is not full: nothing after it


@pytest.mark.parametrize("items", [(LIMIT - 1,)], indirect=True, ids=["under"])
def test_the_row_rule_counts_only_the_readers_rows_while_the_administrators_are_over(items):
    reader, _ = pager(items, "reader")
    admin, titles = pager(items, "admin")
    assert pager_count(reader) == f"1–{LIMIT - 1} of {LIMIT - 1}"
    assert len(titles) == LIMIT - 1 + HIDDEN
    expected = "about " if postgres(items) else ""
    assert re.fullmatch(rf"1–{LIMIT - 1 + HIDDEN} of {expected}\d+", pager_count(admin)), admin


@pytest.mark.parametrize("items", [(LIMIT + 4, 0)], indirect=True, ids=["limit-0"])
def test_a_limit_of_0_always_counts_exactly(items):
    nav, _ = pager(items, "reader")
    assert pager_count(nav) == f"1–{LIMIT + 4} of {LIMIT + 4}"


def test_the_limit_is_a_declared_property_of_10000(definitions):
    declared = definitions.properties[EXACT_COUNT_LIMIT]
    assert (declared.type, declared.default) == ("integer", 10000)


# -- the Table API -----------------------------------------------------------------------------------

@pytest.mark.parametrize("items", [(LIMIT - 1,), (LIMIT,), (LIMIT + 4,)], indirect=True,
                         ids=["under", "at", "above"])
@pytest.mark.parametrize("prefer", [{}, ESTIMATE], ids=["plain", "prefer-estimated"])
def test_x_total_count_is_exact_unless_asked_for_an_estimate_above_the_limit(items, prefer):
    shown = len(items.api("admin").get(f"{ITEMS}?sysparm_query=shown=true").json["result"])
    r = get(items, "reader", f"{ITEMS}?sysparm_limit=2", prefer)
    estimated = bool(prefer) and shown > LIMIT and postgres(items)
    assert r.status_code == 200 and len(r.json["result"]) == 2
    total = int(r.headers["X-Total-Count"])  # always a number
    assert r.headers.get("X-Total-Count-Estimated") == ("true" if estimated else None)
    assert ('rel="last"' in r.headers["Link"]) is not estimated
    assert r.headers.get("Preference-Applied") == ("count=estimated" if prefer else None)
    if estimated:
        assert LIMIT < total <= shown + HIDDEN
    else:
        assert total == shown


@pytest.mark.parametrize("items", [(LIMIT + 4,)], indirect=True, ids=["above"])
def test_paging_by_next_links_from_an_estimate_reaches_every_row_and_no_more(items):
    url, seen = f"{ITEMS}?sysparm_limit=4&sysparm_fields=title&sysparm_query=ORDERBYtitle", []
    for _ in range(10):
        r = get(items, "reader", url, ESTIMATE)
        seen += [row["title"] for row in r.json["result"]]
        following = re.search(r'<([^>]+)>;rel="next"', r.headers["Link"])
        if not following:
            break
        url = "/" + urlsplit(following.group(1)).path.lstrip("/") + "?" + urlsplit(following.group(1)).query
    assert seen == [f"item {i:02d}" for i in range(LIMIT + 4)]


# -- the count itself --------------------------------------------------------------------------------

@pytest.mark.parametrize("items", [(LIMIT + 4,)], indirect=True, ids=["above"])
@pytest.mark.parametrize(("exact_up_to", "exact"), [
    (0, True), (LIMIT, False), (LIMIT + 3 + HIDDEN, False), (LIMIT + 4 + HIDDEN, True), (100, True)])
def test_total_rows_is_exact_up_to_its_limit(items, exact_up_to, exact):
    rt = items.runtime
    with rt.engine.connect() as conn:
        total = total_rows(conn, rt.storage, "x_item", Query(), None, exact_up_to)
    estimated = not exact and postgres(items)
    assert total.estimated is estimated
    assert total.rows == LIMIT + 4 + HIDDEN if not estimated else total.rows > exact_up_to
