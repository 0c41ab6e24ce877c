"""A request's round trips to PostgreSQL: a pooled connection is pinged only after it sat idle, and
the Table API's reads run without BEGIN and ROLLBACK. What a client sees stays the same: a
connection the server ended is replaced, and a reader limited by a rule still reads only what the
rule allows."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from caseloom import database
from conftest import _pg_admin, basic, ui_sign_in

CASES = "/api/now/table/sn_customerservice_case"


@pytest.fixture
def pg_app(app, database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's round trips: SQLite has none")
    return app


def _end_server_sessions(database_url: str) -> int:
    """End every other session on this test's database, as a server restart would."""
    name = sa.engine.make_url(database_url).database
    with _pg_admin().connect() as conn:
        return len(conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                         "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": name}).all())


def _case_id(client) -> str:
    return client.get(f"{CASES}?sysparm_limit=1&sysparm_fields=sys_id", headers=basic("admin")).json["result"][0]["sys_id"]


def _pings(monkeypatch, engine: sa.Engine) -> list[int]:
    counted: list[int] = []
    real = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda dbapi_connection: counted.append(1) or real(dbapi_connection))
    return counted


def test_a_connection_back_in_use_at_once_is_not_pinged_one_that_sat_idle_is(pg_app, monkeypatch):
    from caseloom.web import db

    client = pg_app.test_client()
    case = _case_id(client)
    with pg_app.app_context():
        pings = _pings(monkeypatch, db.engine)
    for _ in range(3):
        assert client.get(f"{CASES}/{case}", headers=basic("admin")).status_code == 200
    assert pings == []
    monkeypatch.setattr(database, "PING_IDLE_SECONDS", -1.0)  # every connection has now sat idle too long
    assert client.get(f"{CASES}/{case}", headers=basic("admin")).status_code == 200
    assert pings == [1]


def test_a_connection_the_server_ended_while_it_sat_idle_is_replaced(pg_app, database_url, monkeypatch):
    client = pg_app.test_client()
    case = _case_id(client)
    assert _end_server_sessions(database_url) >= 1  # the pooled connection of the request above
    monkeypatch.setattr(database, "PING_IDLE_SECONDS", -1.0)
    r = client.get(f"{CASES}/{case}", headers=basic("admin"))
    assert r.status_code == 200, r.json
    assert r.json["result"]["sys_id"] == case


def _autocommit_per_statement(engine: sa.Engine) -> list[bool]:
    seen: list[bool] = []
    sa.event.listen(engine, "before_cursor_execute",
                    lambda conn, cursor, statement, params, context, many:
                    seen.append(conn.connection.dbapi_connection.autocommit))
    return seen


@pytest.mark.parametrize(("method", "path", "body", "autocommit"), [
    ("get", "{cases}/{case}", None, True),
    ("get", "{cases}?sysparm_limit=5", None, True),
    ("patch", "{cases}/{case}", {"short_description": "Changed in a transaction"}, False),
    ("get", "/api/now/stats/sn_customerservice_case?sysparm_count=true", None, False),  # not declared read-only
])
def test_the_table_apis_reads_run_without_a_transaction_and_its_writes_in_one(pg_app, method, path, body, autocommit):
    from caseloom.web import db

    client = pg_app.test_client()
    case = _case_id(client)
    with pg_app.app_context():
        seen = _autocommit_per_statement(db.engine)
    r = getattr(client, method)(path.format(cases=CASES, case=case), headers=basic("admin"), json=body)
    assert r.status_code == 200, r.json
    assert seen and set(seen) == {autocommit}


def test_a_failed_sign_in_is_still_counted_on_a_read(pg_app):
    """Sign-in bookkeeping commits in a transaction of its own, also on a read-only endpoint."""
    client = pg_app.test_client()
    case = _case_id(client)
    for _ in range(2):
        assert client.get(f"{CASES}/{case}", headers=basic("agent", "wrong")).status_code == 401
    from caseloom.web import db

    with pg_app.app_context(), db.engine.connect() as conn:
        failures = conn.execute(sa.text("SELECT failures FROM sys_signin_failure WHERE kind = 'user' AND name = 'agent'"))
        assert failures.scalar_one() == 2


def test_a_record_the_administrator_read_first_is_still_refused_to_a_customer(client):
    """The one-record read kept for readers without conditions is never used for one with them."""
    def ids(user: str) -> set[str]:
        r = client.get(f"{CASES}?sysparm_fields=sys_id&sysparm_limit=10000", headers=basic(user))
        return {row["sys_id"] for row in r.json["result"]}

    theirs = ids("customer")
    other, mine = sorted(ids("admin") - theirs)[0], sorted(theirs)[0]
    fields = "?sysparm_fields=number,short_description,work_notes"
    numbers = {case: client.get(f"{CASES}/{case}{fields}", headers=basic("admin")).json["result"]["number"]
               for case in (other, mine)}
    assert client.get(f"{CASES}/{other}{fields}", headers=basic("customer")).status_code == 404
    r = client.get(f"{CASES}/{mine}{fields}", headers=basic("customer"))
    assert r.status_code == 200 and r.json["result"]["number"] == numbers[mine]
    assert "work_notes" not in r.json["result"]  # a field rule with a condition: not for customers


def _statements(engine: sa.Engine) -> list[str]:
    seen: list[str] = []
    sa.event.listen(engine, "before_cursor_execute",
                    lambda conn, cursor, statement, params, context, many: seen.append(statement))
    return seen


def _reading(statements: list[str], *tables: str) -> list[str]:
    return [s for s in statements if any(f"FROM {t}" in s or f"JOIN {t}" in s for t in tables)]


@pytest.mark.parametrize("password", ["right", "wrong"])
def test_a_basic_sign_in_reads_its_throttle_user_and_roles_in_one_statement(app, password):
    """The throttle's counters, the user and their roles, and the definitions' generation: one round
    trip a request, right password or wrong."""
    from caseloom.web import db

    client = app.test_client()
    case = _case_id(client)
    with app.app_context():
        seen = _statements(db.engine)
    headers = basic("agent") if password == "right" else basic("agent", "wrong")
    r = client.get(f"{CASES}/{case}", headers=headers)
    assert r.status_code == (200 if password == "right" else 401)
    reads = [s for s in _reading(seen, "sys_user", "sys_signin_failure") if s.lstrip().startswith("SELECT")]
    assert len(reads) == 1, reads
    assert all(t in reads[0] for t in ("sys_user", "sys_user_has_role", "sys_signin_failure", "sys_meta"))
    if password == "right":  # the sign-in (with the definitions' generation) and the record
        assert len([s for s in seen if s.lstrip().startswith("SELECT")]) == 2, seen


def test_a_browser_page_reads_its_session_user_and_roles_in_one_statement(app):
    from caseloom.web import db

    client = app.test_client()
    ui_sign_in(client, "agent")
    assert client.get("/sn_customerservice_case_list.do").status_code == 200
    with app.app_context():
        seen = _statements(db.engine)
    assert client.get("/sn_customerservice_case_list.do").status_code == 200
    reads = _reading(seen, "sys_session", "sys_user_has_role")  # (the list's rows join sys_user for names)
    assert len(reads) == 1, reads
    assert all(t in reads[0] for t in ("sys_session", "sys_user", "sys_user_has_role", "sys_meta"))
    assert len(_reading(seen, "sys_meta")) == 1  # the definitions' generation: in that statement, not one of its own


# -- a transaction that only read ends with COMMIT: psycopg keeps what it prepared -----------------------

def _prepared(engine: sa.Engine) -> list[tuple[str, int]]:
    """The statements this engine's (one) pooled connection has prepared: (text, generic plans run)."""
    with engine.connect() as conn:
        return [tuple(row) for row in conn.exec_driver_sql("SELECT statement, generic_plans FROM pg_prepared_statements")]


@pytest.mark.parametrize("page", ["/sn_customerservice_case_list.do", "/sn_customerservice_case.do?sys_id={case}"])
def test_a_page_that_only_reads_runs_its_statements_prepared(pg_app, page):
    """A browser page is a transaction that only reads. Ended with a rollback, psycopg would forget its
    prepared statements each time, and every statement would be planned again on every page (1.5 ms
    for a form's record read with its display values). Ended with a commit, a page shown often runs
    them prepared, planned once."""
    from caseloom.web import db

    client = pg_app.test_client()
    path = page.format(case=_case_id(client))
    ui_sign_in(client, "agent")
    for _ in range(12):  # psycopg prepares from the sixth run; PostgreSQL plans generically from the sixth
        assert client.get(path).status_code == 200
    with pg_app.app_context():
        prepared = _prepared(db.engine)
    cases = [plans for statement, plans in prepared if "FROM task AS t0" in statement]
    assert cases and all(plans > 0 for plans in cases), prepared


def _insert_meta(conn: sa.Connection, table: sa.Table) -> None:
    conn.execute(sa.insert(table).values(name="plain-read-test", value="written"))


def _update_meta(conn: sa.Connection, table: sa.Table) -> None:
    conn.exec_driver_sql("UPDATE sys_meta SET value = 'changed' WHERE name = 'definitions_generation'")


def _copy_meta(conn: sa.Connection, table: sa.Table) -> None:
    from caseloom.bulk import COPY_FROM, insert_rows

    insert_rows(conn, table, [{"name": f"plain-read-test-{i}", "value": "copied"} for i in range(COPY_FROM + 10)])


def _in_savepoint(conn: sa.Connection, table: sa.Table) -> None:
    with conn.begin_nested():
        _insert_meta(conn, table)


def _writable_cte(conn: sa.Connection, table: sa.Table) -> None:
    conn.exec_driver_sql("WITH moved AS (UPDATE sys_meta SET value = 'changed' RETURNING name) SELECT count(*) FROM moved")


@pytest.mark.parametrize("write", [_insert_meta, _update_meta, _copy_meta, _in_savepoint, _writable_cte],
                         ids=["insert", "update", "copy", "savepoint", "writable CTE"])
def test_a_transaction_that_wrote_is_still_rolled_back(runtime, write):
    """Reads, then a write of each kind, then the transaction is abandoned: nothing of it stays, on
    either database (on PostgreSQL the end of a transaction that only read is a COMMIT)."""
    if write is _writable_cte and runtime.engine.dialect.name == "sqlite":
        pytest.skip("SQLite has no UPDATE in a WITH")
    table = runtime.storage.internal("sys_meta")
    with runtime.engine.connect() as conn:
        before = conn.execute(sa.select(table.c.name, table.c.value).order_by(table.c.name)).all()
    with pytest.raises(RuntimeError), runtime.engine.connect() as conn:
        conn.execute(sa.select(table.c.value)).all()
        write(conn, table)
        raise RuntimeError("abandoned")  # the connection's close rolls the transaction back
    with runtime.engine.connect() as conn:
        assert conn.execute(sa.select(table.c.name, table.c.value).order_by(table.c.name)).all() == before
