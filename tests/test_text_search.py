"""Full-text indexes (a table's `text_index:`; caseloom.textindex): ServiceNow's keyword search
`123TEXTQUERY321=words` finds the records with every word (each as a prefix) in their indexed fields;
the database keeps the index current on every write path, set-based ones included; a list's quick
search uses it; the index follows the definitions through migrations. On both databases."""

from __future__ import annotations

import dataclasses
import re
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from caseloom import textindex
from caseloom.definitions import DefinitionErrors, load_folder
from caseloom.jobs.registry import execute_job
from caseloom.migrate import migrate
from caseloom.query import Query, Term
from caseloom.runtime import Runtime
from caseloom.setwrite import update_where
from conftest import basic, ui_sign_in

CASES = "/api/now/table/sn_customerservice_case"


def found(client, words: str, extra: str = "") -> set[str]:
    r = client.get(f"{CASES}?sysparm_fields=sys_id&sysparm_limit=1000&sysparm_query={quote(f'123TEXTQUERY321={words}')}"
                   + extra, headers=basic("admin"))
    assert r.status_code == 200, r.json
    return {c["sys_id"] for c in r.json["result"]}


def expected(client, *words: str) -> set[str]:
    """The cases whose short description or description has each word as a whole word, the last one as
    the start of a word (as typed so far)."""
    rows = client.get(f"{CASES}?sysparm_fields=sys_id,short_description,description&sysparm_limit=1000",
                      headers=basic("admin")).json["result"]
    def has(text: str, word: str, whole: bool) -> bool:
        return re.search(rf"\b{re.escape(word)}" + (r"\b" if whole else ""), text, re.IGNORECASE) is not None
    return {r["sys_id"] for r in rows
            if all(has(r["short_description"], w, i < len(words) - 1) or has(r["description"], w, i < len(words) - 1)
                   for i, w in enumerate(words))}


@pytest.mark.parametrize("words", ["storage slow", "Storage", "stor", "storage sl", "slow stor", "stor slow",
                                   "portal log", "VPN", "demo case 3", "nothing-here"])
def test_a_keyword_search_finds_the_records_with_every_word(client, words):
    assert found(client, words) == expected(client, *re.findall(r"\w+", words))


def test_operators_and_quotes_in_a_search_are_words_not_syntax(client):
    for text in ['"NEAR(storage', "storage AND slow*", "slow | storage & !x", "(storage):*"]:
        r = client.get(f"{CASES}?sysparm_query={quote('123TEXTQUERY321=' + text)}", headers=basic("admin"))
        assert r.status_code == 200, (text, r.json)
    assert found(client, "!!!") == set()  # no words: nothing


def test_the_index_follows_every_write(client, runtime):
    r = client.post(CASES, json={"short_description": "Quantum flux capacitor broken"}, headers=basic("agent"))
    case = r.json["result"]["sys_id"]
    assert found(client, "flux capacitor") == {case}
    client.patch(f"{CASES}/{case}", json={"description": "Warp core breach"}, headers=basic("agent"))
    assert found(client, "warp breach") == {case} and found(client, "quantum warp") == {case}
    client.patch(f"{CASES}/{case}", json={"short_description": "Replicator jammed"}, headers=basic("agent"))
    assert found(client, "flux") == set() and found(client, "replicator") == {case}
    with runtime.transaction() as service:  # a set-based update (a cascade's, a sync's)
        update_where(service, service.defs.tables["sn_customerservice_case"], Term("sys_id", "eq", case),
                     {"short_description": "Holodeck frozen"})
    assert found(client, "replicator") == set() and found(client, "holodeck") == {case}
    assert client.delete(f"{CASES}/{case}", headers=basic("manager")).status_code == 204
    assert found(client, "holodeck") == set()


def test_child_cases_made_set_based_are_found(client, runtime):
    """create_child_cases writes its children with one INSERT ... SELECT: the index has them at once."""
    major = client.post(CASES, json={"short_description": "Teleporter outage in Frankfurt", "major_case_state": "proposed"},
                        headers=basic("mim")).json["result"]["sys_id"]
    for action in ("accept_major_case", "open_case"):
        assert client.post(f"/api/caseloom/actions/sn_customerservice_case/{major}/{action}", json={},
                           headers=basic("mim")).status_code == 200
    lists = client.get("/api/now/table/sn_publications_recipients_list?sysparm_query=type=accounts&sysparm_limit=1",
                       headers=basic("admin")).json["result"]
    client.patch(f"{CASES}/{major}", json={"recipient_list": lists[0]["sys_id"]}, headers=basic("mim"))
    r = client.post(f"/api/caseloom/actions/sn_customerservice_case/{major}/create_child_cases",
                    json={"comments": "On it"}, headers=basic("mim"))
    execute_job(runtime, r.json["result"]["job"])
    children = {c["sys_id"] for c in client.get(f"{CASES}?sysparm_query=parent={major}&sysparm_fields=sys_id",
                                                headers=basic("admin")).json["result"]}
    assert children and found(client, "teleporter frankfurt") == children | {major}


def pending(runtime) -> int:
    """The rows whose words wait in the cases' text index's pending list (PostgreSQL's GIN `fastupdate`)."""
    with runtime.engine.begin() as conn:
        conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        return conn.exec_driver_sql("SELECT pending_tuples FROM pgstatginindex('tx_task')").scalar()


@pytest.mark.parametrize("clean_from, emptied", [(1, True), (textindex.CLEAN_FROM, False)])
def test_a_set_based_write_of_many_rows_empties_the_pending_list(client, runtime, monkeypatch, clean_from, emptied):
    """PostgreSQL: a set-based statement that writes CLEAN_FROM rows or more of a table with a text index
    moves the index's pending entries into it, so a search after a job's writes reads no long list; the
    words are found as before. One record at a time leaves the list to the database."""
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("SQLite's text index (FTS5) has no pending list")
    with runtime.engine.begin() as conn:  # no autovacuum empties the list while the test looks at it
        conn.exec_driver_sql("ALTER TABLE task SET (autovacuum_enabled = false)")
    try:
        cases = [client.post(CASES, json={"short_description": f"Gravitic sensor {i} offline"}, headers=basic("agent"))
                 .json["result"]["sys_id"] for i in range(3)]
        assert pending(runtime) >= 3  # each insert's words wait in the list
        monkeypatch.setattr(textindex, "CLEAN_FROM", clean_from)
        with runtime.transaction() as service:  # a set-based update (a sync's) of the three
            update_where(service, service.defs.tables["sn_customerservice_case"], Term("sys_id", "in", cases),
                         {"description": "Tachyon burst"})
        assert (pending(runtime) == 0) is emptied
        assert found(client, "gravitic tachyon") == set(cases)
    finally:
        with runtime.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE task RESET (autovacuum_enabled)")


def test_a_list_quick_search_uses_the_index_and_the_number(client):
    ui_sign_in(client, "agent")
    page = client.get("/sn_customerservice_case_list.do?sysparm_search=storage%20sl").get_data(as_text=True)
    wanted = expected(client, "storage", "sl")
    numbers = {c["number"] for c in client.get(f"{CASES}?sysparm_fields=number,sys_id&sysparm_limit=1000",
                                               headers=basic("admin")).json["result"] if c["sys_id"] in wanted}
    assert numbers and all(n in page for n in numbers)
    assert f'of <strong class="total">{len(wanted)}</strong>' in page
    one = sorted(numbers)[0]  # a number is no word of the index: found as the record's number
    page = client.get(f"/sn_customerservice_case_list.do?sysparm_search={one}").get_data(as_text=True)
    assert one in page and 'of <strong class="total">1</strong>' in page


def test_a_keyword_search_on_a_table_without_an_index_is_refused(client):
    r = client.get("/api/now/table/customer_account?sysparm_query=123TEXTQUERY321=acme", headers=basic("admin"))
    assert r.status_code == 400 and "has no text index" in r.json["error"]["message"]


def test_a_text_index_on_a_field_that_is_not_text_is_named(tmp_path):
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "a.yaml").write_text("table: a\nfields:\n  n: {type: integer}\n  t: {type: string}\n"
                                                "text_index: [t, n, nope]\n")
    with pytest.raises(DefinitionErrors) as caught:
        load_folder(tmp_path)
    text = str(caught.value)
    assert "text_index field 'n' is not a string or text field of 'a'" in text and "'nope'" in text


def test_the_index_follows_the_definitions_through_migrations(config, tmp_path, definitions_copy):
    """Added later: built over the records already there; changed: rebuilt; removed: dropped."""
    table = definitions_copy / "tables" / "sn_customerservice_case.yaml"
    original = table.read_text()

    def runtime_with(text: str) -> Runtime:
        table.write_text(text)
        return Runtime(dataclasses.replace(config, definitions=str(definitions_copy)), load_folder(definitions_copy))

    def without_index(text: str) -> str:
        """The cases without their text index, and so without their similar lists (and the bench's)."""
        bench = definitions_copy / "bench.yaml"
        bench.write_text(re.sub(r"\n +similar: .*", "", bench.read_text()))
        text = re.sub(r"\nsimilar:\n(?:[ #].*\n)+", "\n", text)
        return text.replace("text_index: [short_description, description]\n", "")

    rt = runtime_with(without_index(original))
    try:
        migrate(rt.engine, rt.storage)
        with rt.transaction() as service, service.by_definitions():
            service.insert("sn_customerservice_case", {"short_description": "Gravity well", "description": "Tides"})
    finally:
        rt.engine.dispose()
    for fields, words, hits in (("[short_description, description]", "gravity tides", 1),
                                ("[description]", "gravity", 0), ("[description]", "tides", 1)):
        rt = runtime_with(original.replace("[short_description, description]", fields))
        try:
            done = migrate(rt.engine, rt.storage)
            with rt.transaction() as service:
                assert service.count("sn_customerservice_case",
                                     Query(Term(textindex.TEXT_QUERY, "eq", words))) == hits, (fields, words, done)
        finally:
            rt.engine.dispose()
    rt = runtime_with(without_index(original))
    try:
        assert migrate(rt.engine, rt.storage) == ["drop the text index of task"]
        with rt.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                assert not conn.execute(sa.text("SELECT name FROM sqlite_master WHERE name LIKE 'task_text%'")).all()
    finally:
        rt.engine.dispose()


def test_a_field_altered_rebuilds_the_text_index_only_if_the_index_reads_it(config, definitions_copy):
    """Widening a field the text index does not read changes only that field: on PostgreSQL the text
    index's generated column stays as it is (adding it again would rewrite every case under the table's
    lock). Widening one it reads rebuilds the index. Either way the words are found."""
    case = definitions_copy / "tables" / "sn_customerservice_case.yaml"
    original = case.read_text()

    def migrated(text: str) -> list[str]:
        case.write_text(text)
        rt = Runtime(dataclasses.replace(config, definitions=str(definitions_copy)), load_folder(definitions_copy))
        try:
            done = migrate(rt.engine, rt.storage)
            with rt.transaction() as service, service.by_definitions():
                if not service.count("sn_customerservice_case", Query(Term("short_description", "eq", "Gravity well"))):
                    service.insert("sn_customerservice_case", {"short_description": "Gravity well", "description": "Tides"})
                assert service.count("sn_customerservice_case", Query(Term(textindex.TEXT_QUERY, "eq", "gravity tides"))) == 1
                column = service.conn.execute(sa.text(
                    "SELECT attnum FROM pg_attribute WHERE attrelid = 'task'::regclass AND attname = 'sys_text' "
                    "AND NOT attisdropped")).scalar() if service.conn.dialect.name == "postgresql" else None
            return done, column
        finally:
            rt.engine.dispose()

    _, column = migrated(original)
    other = original.replace("similar_suggestion: {type: string, max_length: 300,",
                             "similar_suggestion: {type: string, max_length: 400,")
    done, same = migrated(other)
    assert "change field task.similar_suggestion from VARCHAR(300) to VARCHAR(400)" in done
    if config.database_url.startswith("postgresql"):
        assert not [step for step in done if "text index" in step], done
        assert same == column  # the very column: not dropped and added again
    done, rebuilt = migrated(other.replace("short_description: {type: string, max_length: 160,",
                                           "short_description: {type: string, max_length: 200,"))
    assert "build the text index of task (short_description, description)" in done
    if config.database_url.startswith("postgresql"):
        assert rebuilt != column
