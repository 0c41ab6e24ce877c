"""The definitions API: validate a whole new set, migrate, record history, reload everywhere."""

import logging
import threading
import time
from dataclasses import replace

import pytest
import sqlalchemy as sa

from caseloom import migrate
from caseloom.web import create_app
from conftest import basic

WIDGET = """table: u_widget
label: Widget
display: name
fields:
  name: {type: string, max_length: 40, mandatory: true}
  size: {type: choice, choices: {s: Small, l: Large}, default: s}
"""


@pytest.fixture
def admin_client(config, definitions, definitions_copy):
    app = create_app(replace(config, definitions=str(definitions_copy)), definitions, testing=True)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = basic("admin")["Authorization"]
    return client, app


def test_list_and_read_definition_files(admin_client):
    client, _ = admin_client
    files = client.get("/api/caseloom/definitions").json["result"]
    paths = {f["path"] for f in files}
    assert "tables/sn_customerservice_case.yaml" in paths
    assert all(len(f["version"]) == 16 for f in files)
    text = client.get("/api/caseloom/definitions/tables/sn_customerservice_case.yaml").get_data(as_text=True)
    assert text.startswith("table: sn_customerservice_case")


def test_put_new_table_migrates_and_serves_it_on_the_next_request(admin_client, definitions_copy, config):
    client, app = admin_client
    r = client.put("/api/caseloom/definitions/tables/u_widget.yaml", data=WIDGET, content_type="application/yaml")
    assert r.status_code == 200, r.json
    assert "create table u_widget" in r.json["result"]["schema_changes"]
    assert (definitions_copy / "tables/u_widget.yaml").read_text() == WIDGET
    created = client.post("/api/now/table/u_widget", json={"name": "Sprocket"})
    assert created.status_code == 201 and created.json["result"]["size"] == "s"
    # a second server process sharing the database picks the new set up on its next request
    other = create_app(config, None, testing=True).test_client()
    r = other.get("/api/now/table/u_widget", headers=basic("admin"))
    assert r.status_code == 200 and [w["name"] for w in r.json["result"]] == ["Sprocket"]
    history = client.get("/api/caseloom/definitions/history").json["result"]
    assert history[0]["path"] == "tables/u_widget.yaml" and history[0]["user"] == "admin"
    assert history[0]["action"] == "create"


def test_a_role_changed_elsewhere_counts_from_the_next_basic_sign_in(admin_client, config):
    """Another process changes what a role contains. This process's next HTTP Basic request reads the
    definitions' generation in its sign-in's statement, and expands the user's roles by the new set."""
    client, _ = admin_client
    other = create_app(config, None, testing=True).test_client()
    cases = "/api/now/table/sn_customerservice_case?sysparm_limit=1"
    assert other.get(cases, headers=basic("monitor")).status_code == 403  # an integration, not an agent
    roles = client.get("/api/caseloom/definitions/roles.yaml").get_data(as_text=True)
    line = "  evt_mgmt_integration:\n"
    assert line in roles
    wider = roles.replace(line, line + "    contains: [sn_customerservice_agent]\n")
    r = client.put("/api/caseloom/definitions/roles.yaml", data=wider, content_type="application/yaml")
    assert r.status_code == 200, r.json
    seen = other.get(cases, headers=basic("monitor"))
    assert seen.status_code == 200 and len(seen.json["result"]) == 1, seen.json


def test_a_role_changed_elsewhere_counts_from_a_browser_session_s_next_page(admin_client, config):
    """The same for a browser session: its statement reads the generation before the session's user
    is judged. A request whose cookie names no live session still checks it."""
    client, _ = admin_client
    other = create_app(config, None, testing=True)
    other.config["WTF_CSRF_ENABLED"] = False
    browser, stranger = other.test_client(), other.test_client()
    browser.post("/login", data={"user_name": "monitor", "user_password": "monitor"})
    assert browser.get("/sn_customerservice_case_list.do").status_code == 403
    with stranger.session_transaction() as cookie:
        cookie["session_token"] = "no-such-session"
    assert stranger.get("/sn_customerservice_case_list.do").status_code == 302  # to the sign-in page
    roles = client.get("/api/caseloom/definitions/roles.yaml").get_data(as_text=True)
    line = "  evt_mgmt_integration:\n"
    wider = roles.replace(line, line + "    contains: [sn_customerservice_agent]\n")
    widget = client.put("/api/caseloom/definitions/tables/u_widget.yaml", data=WIDGET, content_type="application/yaml")
    assert widget.status_code == 200, widget.json
    assert stranger.get("/u_widget_list.do").status_code == 302  # known now: a sign-in page, not a 404
    assert client.put("/api/caseloom/definitions/roles.yaml", data=wider, content_type="application/yaml").status_code == 200
    assert browser.get("/sn_customerservice_case_list.do").status_code == 200


REPEAT = 8  # more than psycopg's prepare_threshold (5): a statement run this often is prepared


def test_a_column_altered_by_a_switch_of_definitions_breaks_no_prepared_statement(admin_client, config):
    """A list page, a form and a one-record read, each run often enough to be prepared on PostgreSQL, in
    this process and in another sharing the database; then a wider max_length alters the column's type
    ("cached plan must not change result type" for a statement prepared before). Every page still
    answers, in both processes, with the new length in force."""
    client, app = admin_client
    assert client.put("/api/caseloom/definitions/tables/u_widget.yaml", data=WIDGET,
                      content_type="application/yaml").status_code == 200
    sys_id = client.post("/api/now/table/u_widget", json={"name": "Sprocket"}).json["result"]["sys_id"]
    other = create_app(config, None, testing=True)
    other.config["WTF_CSRF_ENABLED"] = False
    browser, api = other.test_client(), other.test_client()
    assert browser.post("/login", data={"user_name": "admin", "user_password": "admin"}).status_code == 302
    app.config["WTF_CSRF_ENABLED"] = False
    mine = app.test_client()
    assert mine.post("/login", data={"user_name": "admin", "user_password": "admin"}).status_code == 302
    pages = ("/u_widget_list.do", f"/u_widget.do?sys_id={sys_id}")
    record = f"/api/now/table/u_widget/{sys_id}"
    for _ in range(REPEAT):
        for who in (browser, mine):
            assert all(who.get(page).status_code == 200 for page in pages)
        assert api.get(record, headers=basic("admin")).status_code == 200
        assert client.get(record).status_code == 200
    wider = WIDGET.replace("max_length: 40", "max_length: 80")
    assert client.put("/api/caseloom/definitions/tables/u_widget.yaml", data=wider,
                      content_type="application/yaml").status_code == 200
    long_name = "S" * 70
    assert client.patch(record, json={"name": long_name}).status_code == 200
    for _ in range(2):
        for who in (browser, mine):
            seen = [who.get(page) for page in pages]
            assert [r.status_code for r in seen] == [200, 200]
            assert all(long_name in r.get_data(as_text=True) for r in seen)
        for who, headers in ((api, basic("admin")), (client, {})):
            r = who.get(record, headers=headers)
            assert r.status_code == 200 and r.json["result"]["name"] == long_name


def test_invalid_definition_is_422_with_located_errors_and_changes_nothing(admin_client, definitions_copy):
    client, _ = admin_client
    bad = WIDGET + "  owner: {type: reference, to: nowhere}\n"
    r = client.put("/api/caseloom/definitions/tables/u_widget.yaml", data=bad, content_type="application/yaml")
    assert r.status_code == 422
    detail = r.json["error"]["detail"]
    assert detail == [{"path": "definitions/tables/u_widget.yaml", "line": 7, "column": 32,
                       "message": "reference to unknown table 'nowhere'"}]
    assert not (definitions_copy / "tables/u_widget.yaml").exists()
    assert client.get("/api/now/table/u_widget").status_code == 404
    r = client.put("/api/caseloom/definitions/tables/broken.yaml", data="table: [unclosed", content_type="application/yaml")
    assert r.status_code == 422 and "YAML syntax error" in r.json["error"]["detail"][0]["message"]


BOMB = "".join(f"{b}: &{b} [{', '.join([f'*{a}'] * 9) if a else ', '.join(['lol'] * 9)}]\n"
               for a, b in zip(["", *"abcdefgh"], "abcdefghi", strict=True))  # nine levels of nine aliases: 9^9 values


@pytest.mark.parametrize("text, line, message", [
    (BOMB, 1, "the file holds more than 100,000 values once its aliases (*name) are expanded"),
    ("table: u_deep\nlabel: " + "[" * 5000 + "]" * 5000 + "\n", 1, "values nested more than 64 levels deep"),
    ("table: u_deep\nlabel: " + "[" * 70 + "]" * 70 + "\n", 2, "values nested more than 64 levels deep"),
], ids=["aliases expanding to a billion values", "nested past the parser's recursion", "nested 70 deep"])
def test_a_definition_too_big_to_read_is_422_at_once(admin_client, definitions_copy, text, line, message):
    """A YAML file whose aliases expand to a billion values, or nested thousands deep, is refused as
    soon as the count or the depth is passed, never read whole (it would take the process's memory, or
    its stack: a 500)."""
    client, _ = admin_client
    r = client.put("/api/caseloom/definitions/tables/u_deep.yaml", data=text, content_type="application/yaml")
    assert r.status_code == 422, r.get_data(as_text=True)[:500]
    [error] = r.json["error"]["detail"]
    assert error["path"] == "definitions/tables/u_deep.yaml" and error["line"] == line
    assert error["message"].startswith(message)
    assert not (definitions_copy / "tables/u_deep.yaml").exists()


@pytest.mark.parametrize("body, query, status, message", [
    (b"table: u_utf\nlabel: caf\xe9\n", "", 400, "the body is not UTF-8 text: byte 0xe9 at offset 23 cannot be read"),
    (f"table: u_{'x' * 60}\n".encode(), "", 422, "is longer than 48 characters: a table's or a field's name is a "
                                                  "database name"),
    (f"table: u_big\nlabel: {'x' * 1_048_576}\n".encode(), "", 422, "the file is larger than 1,048,576 characters"),
    (b"table: u_ok\n", "?force=maybe", 400, "force: expected true or false, got 'maybe'"),
], ids=["not UTF-8", "a name too long", "a file too large", "force neither true nor false"])
def test_a_definition_put_that_cannot_be_taken_is_refused_naming_why(admin_client, definitions_copy, body, query,
                                                                     status, message):
    client, _ = admin_client
    r = client.put(f"/api/caseloom/definitions/tables/u_new.yaml{query}", data=body, content_type="application/yaml")
    assert r.status_code == status, r.get_data(as_text=True)[:300]
    error = r.json["error"]
    assert message in (error["message"] if status == 400 else error["detail"][0]["message"])
    assert not (definitions_copy / "tables/u_new.yaml").exists()


def test_dropping_a_field_with_data_is_refused_then_restored_from_history(admin_client):
    client, _ = admin_client
    client.put("/api/caseloom/definitions/tables/u_widget.yaml", data=WIDGET, content_type="application/yaml")
    client.post("/api/now/table/u_widget", json={"name": "Sprocket", "size": "l"})
    smaller = WIDGET.replace("  size: {type: choice, choices: {s: Small, l: Large}, default: s}\n", "")
    r = client.put("/api/caseloom/definitions/tables/u_widget.yaml", data=smaller, content_type="application/yaml")
    assert r.status_code == 409 and "u_widget.size" in r.json["error"]["detail"][0]
    assert client.get("/api/now/table/u_widget").json["result"][0]["size"] == "l"
    r = client.delete("/api/caseloom/definitions/tables/u_widget.yaml")
    assert r.status_code == 409  # the table holds a row
    entry = client.get("/api/caseloom/definitions/history").json["result"][0]
    assert client.post(f"/api/caseloom/definitions/history/{entry['id']}/restore").status_code == 200


def widget_with_a_row(client) -> None:
    assert client.put("/api/caseloom/definitions/tables/u_widget.yaml", data=WIDGET,
                      content_type="application/yaml").status_code == 200
    assert client.post("/api/now/table/u_widget", json={"name": "Sprocket"}).status_code == 201


def test_a_schema_change_gives_way_to_a_long_reader_and_never_holds_up_the_reads_behind_it(admin_client,
                                                                                           table_held):
    """On PostgreSQL an ALTER TABLE waits for the transactions using its table, and every statement after
    it waits behind it. A change of definitions waits 2 s at most a try, and between tries the reads
    queued behind it run: a list read while a long transaction holds the table answers; the change is
    made once that transaction ends."""
    client, app = admin_client
    widget_with_a_row(client)
    table_held.read("u_widget")
    done = {}
    coloured = WIDGET + "  colour: {type: string, max_length: 20}\n"
    change = threading.Thread(target=lambda: done.setdefault("put", client.put(
        "/api/caseloom/definitions/tables/u_widget.yaml", data=coloured, content_type="application/yaml")))
    change.start()
    deadline = time.monotonic() + 20
    while not table_held.waiting() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert table_held.waiting(), "the change never waited for the table"
    reader = app.test_client()
    listed = reader.get("/api/now/table/u_widget?sysparm_fields=name", headers=basic("admin"))
    assert listed.status_code == 200 and [r["name"] for r in listed.json["result"]] == ["Sprocket"]
    assert change.is_alive(), "the change was made while the table was in use"
    table_held.release()
    change.join(60)
    assert done["put"].status_code == 200, done["put"].get_data(as_text=True)
    made = client.post("/api/now/table/u_widget", json={"name": "Gear", "colour": "red"})
    assert made.status_code == 201 and made.json["result"]["colour"] == "red"


def test_a_schema_change_whose_table_stays_in_use_is_503_and_changes_nothing(admin_client, table_held,
                                                                            monkeypatch):
    """Through every try the table stays in use: 503 with Retry-After, naming the table; the definition
    file and the table are as they were."""
    client, app = admin_client
    assert client.put("/api/caseloom/definitions/tables/u_widget.yaml", data=WIDGET,
                      content_type="application/yaml").status_code == 200
    monkeypatch.setattr(migrate, "DDL_LOCK_WAIT_MS", 100)
    monkeypatch.setattr(migrate, "DDL_TRIES", 3)
    table_held.read("u_widget")
    try:
        refused = client.put("/api/caseloom/definitions/tables/u_widget.yaml",
                             data=WIDGET + "  colour: {type: string, max_length: 20}\n", content_type="application/yaml")
    finally:
        table_held.release()
    assert refused.status_code == 503, refused.get_data(as_text=True)
    assert refused.headers["Retry-After"] == "5"
    assert "other transactions kept using u_widget through 3 tries of 0.1 s" in refused.json["error"]["detail"]
    assert "nothing was changed" in refused.json["error"]["detail"]
    assert client.get("/api/caseloom/definitions/tables/u_widget.yaml").get_data(as_text=True) == WIDGET
    assert client.post("/api/now/table/u_widget", json={"name": "Gear", "colour": "red"}).status_code == 400


INDEXED = WIDGET + "indexes:\n  - [name, size]\n"


def indexed_while_written(client, table_held) -> tuple[threading.Thread, dict]:
    """A widget table with a row, written by another transaction (held) while a thread puts its definition with a
    new index: the thread, and the dict its answer goes to (`put`)."""
    widget_with_a_row(client)
    table_held.write("u_widget")
    done: dict = {}
    change = threading.Thread(target=lambda: done.setdefault("put", client.put(
        "/api/caseloom/definitions/tables/u_widget.yaml", data=INDEXED, content_type="application/yaml")))
    change.start()
    return change, done


def index_building(table_held, change: threading.Thread, done: dict) -> int | None:
    """The server process of the CREATE INDEX CONCURRENTLY `change` (a thread putting a definition) runs, once
    it runs. Before it, the change may wait out its schema change's tries (migrate.DDL_TRIES, about 26 s)."""
    building = ("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND query ILIKE 'CREATE INDEX CONCURRENTLY%%'")
    deadline = time.monotonic() + 90
    while change.is_alive() and time.monotonic() < deadline:
        pid = table_held.sql(building).scalar()
        if pid:
            return pid
        time.sleep(0.05)
    seen = table_held.sql("SELECT pid, state, wait_event_type, wait_event, left(query, 120) FROM pg_stat_activity "
                          "WHERE datname = current_database()").all()
    put = done.get("put")
    raise AssertionError(f"no concurrent build while the change ran (alive: {change.is_alive()}, answer: "
                         f"{put and put.get_data(as_text=True)}); sessions: {seen}")


def test_a_new_index_of_a_table_with_rows_is_built_while_the_table_is_written(admin_client, table_held, caplog):
    """A plain CREATE INDEX holds every write of its table for the whole build. A new index of a table that
    holds rows is built after the change commits, with CREATE INDEX CONCURRENTLY: the change is made at
    once, writes go on while the build waits for the table's writer, and the index is there at the end."""
    caplog.set_level(logging.INFO, logger="caseloom.indexbuild")
    client, app = admin_client
    change, done = indexed_while_written(client, table_held)
    assert index_building(table_held, change, done), "the index was not built concurrently"
    # the change is committed: another client reads the new file while the index waits for the writer
    reader = app.test_client()
    text = reader.get("/api/caseloom/definitions/tables/u_widget.yaml", headers=basic("admin")).get_data(as_text=True)
    assert text == INDEXED
    # a write of the table goes on without waiting (a plain CREATE INDEX's SHARE lock would hold it)
    table_held.sql("SET lock_timeout = '1s'")
    table_held.sql(f"INSERT INTO u_widget (sys_id, sys_class_name, sys_created_on, sys_updated_on, sys_mod_count, "
                      f"name) VALUES ('{'b' * 32}', 'u_widget', now(), now(), 0, 'Gear')")
    written = reader.post("/api/now/table/u_widget", json={"name": "Cog"}, headers=basic("admin"))
    assert written.status_code == 201, written.get_data(as_text=True)
    assert change.is_alive() and table_held.index("ix_u_widget_name_size") == "invalid"  # still building
    table_held.release()
    change.join(60)
    put = done["put"]
    assert put.status_code == 200, put.get_data(as_text=True)
    assert "create index ix_u_widget_name_size on u_widget" in put.json["result"]["schema_changes"]
    assert put.json["result"]["not_built"] == []
    assert table_held.index("ix_u_widget_name_size") == "valid"
    assert table_held.index("ix_u_widget_name") is None  # the new index serves its lookups
    said = [r.getMessage() for r in caplog.records if r.name == "caseloom.indexbuild"]
    expected = ["index-build: building ix_u_widget_name_size of u_widget, concurrently",
                "index-build: built ix_u_widget_name_size of u_widget in ",
                "index-build: dropping ix_u_widget_name of u_widget, concurrently",
                "index-build: dropped ix_u_widget_name of u_widget in "]
    assert len(said) == 4 and all(m.startswith(e) for m, e in zip(said, expected, strict=True)), said


def test_an_index_not_built_is_reported_and_built_by_the_next_change(admin_client, table_held, monkeypatch, caplog):
    """The build waits for the table's writers at most BUILD_LOCK_WAIT_MS. One that could not happen is
    reported with the change (made and kept), and the next change builds it, dropping the invalid index
    the failed build left; so does the next change after a build whose process died."""
    from caseloom import indexbuild

    client, app = admin_client
    widget_with_a_row(client)
    monkeypatch.setattr(indexbuild, "BUILD_LOCK_WAIT_MS", 200)
    table_held.write("u_widget")
    try:
        put = client.put("/api/caseloom/definitions/tables/u_widget.yaml", data=INDEXED,
                         content_type="application/yaml")
    finally:
        table_held.release()
    assert put.status_code == 200, put.get_data(as_text=True)
    assert put.json["result"]["not_built"] == [
        "the index ix_u_widget_name_size of u_widget was not built (canceling statement due to lock timeout); the "
        "change itself is made, and queries run without the index: the next change of definitions or `caseloom "
        "init` builds it",
        "the index ix_u_widget_name of u_widget is kept until the index that replaces it is built"]
    warned = [r.getMessage() for r in caplog.records if r.name == "caseloom.indexbuild" and r.levelname == "WARNING"]
    assert warned == ["index-build: " + put.json["result"]["not_built"][0]]  # in the server's log too
    assert client.get("/api/caseloom/definitions/tables/u_widget.yaml").get_data(as_text=True) == INDEXED
    # the half-built index could not be dropped either while the writer held on: the planner ignores it
    assert table_held.index("ix_u_widget_name_size") == "invalid"
    assert table_held.index("ix_u_widget_name") == "valid"  # the lookups keep the old one meanwhile
    coloured = INDEXED.replace("indexes:", "  colour: {type: string, max_length: 20}\nindexes:")
    put = client.put("/api/caseloom/definitions/tables/u_widget.yaml", data=coloured, content_type="application/yaml")
    assert put.status_code == 200 and put.json["result"]["not_built"] == []
    assert "create index ix_u_widget_name_size on u_widget" in put.json["result"]["schema_changes"]
    assert table_held.index("ix_u_widget_name_size") == "valid"
    assert table_held.index("ix_u_widget_name") is None
    # a build that died half way (here: a unique index over two equal rows) leaves an invalid index
    assert client.post("/api/now/table/u_widget", json={"name": "Sprocket"}).status_code == 201
    table_held.sql("DROP INDEX ix_u_widget_name_size")
    with pytest.raises(sa.exc.IntegrityError):
        table_held.sql("CREATE UNIQUE INDEX CONCURRENTLY ix_u_widget_name_size ON u_widget (name, size)")
    assert table_held.index("ix_u_widget_name_size") == "invalid"
    put = client.put("/api/caseloom/definitions/tables/u_widget.yaml", data=coloured.replace("20}", "30}"),
                     content_type="application/yaml")
    assert put.status_code == 200 and put.json["result"]["not_built"] == []
    assert "create index ix_u_widget_name_size on u_widget" in put.json["result"]["schema_changes"]
    assert table_held.index("ix_u_widget_name_size") == "valid"


def test_a_build_whose_session_is_ended_is_reported_and_the_change_kept(admin_client, table_held):
    """An administrator (or a failover) ends the session of a concurrent build half way: the change is made and
    kept, the answer says which index was not built and why, and the next change builds it."""
    client, _ = admin_client
    change, done = indexed_while_written(client, table_held)
    try:
        pid = index_building(table_held, change, done)
        assert table_held.sql(f"SELECT pg_terminate_backend({pid})").scalar()
        change.join(60)
    finally:
        table_held.release()
    put = done["put"]
    assert put.status_code == 200, put.get_data(as_text=True)
    assert put.json["result"]["not_built"] == [
        "the index ix_u_widget_name_size of u_widget was not built (terminating connection due to administrator "
        "command); the change itself is made, and queries run without the index: the next change of definitions or "
        "`caseloom init` builds it",
        "the index ix_u_widget_name of u_widget was not dropped (terminating connection due to administrator "
        "command); the change itself is made: the next change of definitions or `caseloom init` drops it"]
    assert client.get("/api/caseloom/definitions/tables/u_widget.yaml").get_data(as_text=True) == INDEXED
    assert table_held.index("ix_u_widget_name_size") == "invalid"
    assert table_held.index("ix_u_widget_name") == "valid"
    coloured = INDEXED.replace("indexes:", "  colour: {type: string, max_length: 20}\nindexes:")
    put = client.put("/api/caseloom/definitions/tables/u_widget.yaml", data=coloured, content_type="application/yaml")
    assert put.status_code == 200 and put.json["result"]["not_built"] == []
    assert table_held.index("ix_u_widget_name_size") == "valid"
    assert table_held.index("ix_u_widget_name") is None


def test_definitions_api_is_admin_only(client):
    assert client.get("/api/caseloom/definitions").status_code == 401
    assert client.get("/api/caseloom/definitions", headers=basic("manager")).status_code == 403
    r = client.put("/api/caseloom/definitions/tables/x.yaml", data=WIDGET, headers=basic("agent"))
    assert r.status_code == 403


def test_bad_paths_are_refused(admin_client):
    client, _ = admin_client
    assert client.put("/api/caseloom/definitions/../evil.yaml", data=WIDGET).status_code in (400, 404)
    assert client.put("/api/caseloom/definitions/tables/x.txt", data=WIDGET).status_code == 400


def test_openapi_document_lists_every_table(client):
    doc = client.get("/api/caseloom/openapi.json", headers=basic("agent")).json
    assert doc["openapi"].startswith("3.")
    assert "/api/now/table/sn_customerservice_case" in doc["paths"]
    assert "/api/now/table/sn_customerservice_case/{sys_id}" in doc["paths"]
    case = doc["components"]["schemas"]["sn_customerservice_case.create"]  # what a POST must carry
    assert "short_description" in case["required"]
    assert set(case["properties"]["state"]["anyOf"][0]["enum"]) >= {"1", "10", "18", "6", "3", "7"}
    assert "user_password" not in doc["components"]["schemas"]["sys_user"]["properties"]


def test_a_plan_is_a_dry_run_and_applying_it_is_the_same_change(runtime):
    from caseloom.definitions.changes import StaleChange, apply_change, plan_change
    from caseloom.definitions.store import DefinitionStore

    with runtime.engine.begin() as conn:
        store = DefinitionStore(runtime.storage, conn)
        before = len(store.history())
        plan = plan_change(store, {"tables/u_widget.yaml": WIDGET})
        assert [(f.path, f.action) for f in plan.files] == [("tables/u_widget.yaml", "create")]
        assert plan.schema_changes[0] == "create table u_widget" and plan.losses == ()
        assert plan.files[0].diff()[2:4] == ["@@ -0,0 +1,6 @@", "+table: u_widget"]
        assert "tables/u_widget.yaml" not in store.texts() and len(store.history()) == before
        assert not sa.inspect(conn).has_table("u_widget")
        with pytest.raises(StaleChange, match="u_widget.yaml was changed by someone else"):
            plan_change(store, {"tables/u_widget.yaml": WIDGET}, bases={"tables/u_widget.yaml": "0123456789abcdef"})
        done = apply_change(store, {"tables/u_widget.yaml": WIDGET}, "admin", bases={"tables/u_widget.yaml": ""})
        assert done.schema_changes == plan.schema_changes and sa.inspect(conn).has_table("u_widget")
        assert apply_change(store, {"tables/u_widget.yaml": WIDGET}, "admin").empty  # the same text again: nothing
        assert len(store.history()) == before + 1


def test_putting_the_same_text_again_changes_nothing(admin_client):
    client, _ = admin_client
    text = client.get("/api/caseloom/definitions/tables/task.yaml").get_data(as_text=True)
    before = client.get("/api/caseloom/definitions/history").json["result"]
    r = client.put("/api/caseloom/definitions/tables/task.yaml", data=text, content_type="application/yaml")
    assert r.status_code == 200 and r.json["result"]["schema_changes"] == []
    assert client.get("/api/caseloom/definitions/history").json["result"] == before
