"""Similar records (a table's `similar:`; caseloom.similar): the score from 0 to 1 against the record
itself, the similar lists on a case's form and through `GET /api/caseloom/similar/{table}/{sys_id}`
with their threshold properties at the edges, the suggestion "N similar cases from M accounts since
yesterday" on the case and in the managers' list with its properties at the edges, a major case's
suggested child cases added in one click, access, bad definitions, and a second application. On both
databases: the scores are the same on both (the words weighed are the same)."""

from __future__ import annotations

import datetime as dt
import math
import re

import pytest
import sqlalchemy as sa

from caseloom import similar
from conftest import basic, errors_after_edit, ui_sign_in

CASES = "/api/now/table/sn_customerservice_case"
CASE = "sn_customerservice_case"
# invented words, so that no demo case shares them and every count below is exact
TEXT = "Zorblax quuxite flarnwick wibblet snorkan"
SUGGESTION = re.compile(r"(\d+) similar cases from (\d+) accounts since yesterday — propose a major case\?")


def create(client, text: str, user: str = "agent", **values) -> str:
    r = client.post(CASES, json={"short_description": text, **values}, headers=basic(user))
    assert r.status_code == 201, r.json
    worker(client.application)
    return r.json["result"]["sys_id"]


def worker(app) -> None:
    """What a worker does with the similar-list suggestions the app queued after its writes (at once, as
    a worker of an idle queue does)."""
    from caseloom.web.jobs_api import queue

    huey = queue(app).huey
    waiting = []
    while (task := huey.dequeue()) is not None:
        if task.name == "similar_suggest":
            huey.execute(task)
        else:
            waiting.append(task)  # e-mail to deliver: not this test's
    for task in waiting:
        huey.enqueue(task)


def similar_to(client, sys_id: str, query: str = "", user: str = "agent") -> list[dict]:
    r = client.get(f"/api/caseloom/similar/{CASE}/{sys_id}{query}", headers=basic(user))
    assert r.status_code == 200, r.json
    return r.json["result"]


def set_property(client, name: str, value: str) -> None:
    prop = client.get(f"/api/now/table/sys_properties?sysparm_query=name={name}", headers=basic("admin")).json
    r = client.patch(f"/api/now/table/sys_properties/{prop['result'][0]['sys_id']}", json={"value": value},
                     headers=basic("admin"))
    assert r.status_code == 200, r.json


def accounts(client, n: int) -> list[str]:
    rows = client.get(f"/api/now/table/customer_account?sysparm_fields=sys_id&sysparm_limit={n}&sysparm_query=ORDERBYname",
                      headers=basic("admin")).json["result"]
    assert len(rows) == n
    return [r["sys_id"] for r in rows]


def weight(others: int) -> float:
    return math.log(1 + similar.WINDOW / others)


def form(client, sys_id: str) -> str:
    """A case's form with its similar lists, as htmx completes it once the form has loaded."""
    r = client.get(f"/{CASE}.do?sys_id={sys_id}")
    assert r.status_code == 200
    page = r.get_data(as_text=True)
    assert f'hx-get="/ui/similar/{CASE}/{sys_id}" hx-trigger="load"' in page  # asked for after the form
    r = client.get(f"/ui/similar/{CASE}/{sys_id}", headers={"HX-Request": "true"})
    assert r.status_code == 200
    return page + r.get_data(as_text=True)


def panel(html: str, name: str) -> str | None:
    """The similar list `name` of a form page, or None when the form does not show it."""
    found = re.search(rf'<section class="similar card" id="similar-{name}".*?</section>', html, re.S)
    return found.group(0) if found else None


# -- the score ------------------------------------------------------------------------------------------------

def test_the_score_is_against_the_case_itself_and_the_same_on_both_databases(client):
    case = create(client, TEXT)
    twin = create(client, TEXT)                          # every word: 1
    part = create(client, "Zorblax quuxite at the depot")  # two of the five
    create(client, "Printer out of toner")               # none: not listed
    found = similar_to(client, case)
    assert [r["sys_id"] for r in found] == [twin, part]
    assert all(set(r) >= {"sys_id", "number", "score", "short_description"} for r in found)
    assert found[0]["score"] == 1.0 and found[0]["number"].startswith("CS")
    # each word weighs ln(1 + 2000 / n), n the other cases having it: zorblax and quuxite 2, the rest 1
    shared, alone = 2 * weight(2), 3 * weight(1)
    assert found[1]["score"] == pytest.approx(shared / (shared + alone), abs=1e-4)
    # the case itself is never among its similar cases; words no other case has do not count
    assert twin not in {r["sys_id"] for r in similar_to(client, twin)}
    assert similar_to(client, part)[0]["score"] == 1.0  # all of its weighed words (zorblax, quuxite)


def read_by_index(monkeypatch) -> list:
    """Every word's newest holders read by the text index (PostgreSQL: no word is common enough to walk)."""
    monkeypatch.setattr(similar, "WALK_SHARE", 2.0)
    return []


def walk_common_words(runtime, monkeypatch) -> list:
    """On PostgreSQL, the common words' newest holders read by one walk down the primary key (every word
    the statistics know counts as common); the list of the walks' searches, to check one was walked."""
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("SQLite's text index gives a word's newest holders directly: nothing is walked")
    with runtime.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE task")  # the statistics name the common words
    monkeypatch.setattr(similar, "WALK_SHARE", 0.0)
    walked: list = []
    scores = similar._pg_scores
    monkeypatch.setattr(similar, "_pg_scores", lambda *args: walked.append(args[4]) or scores(*args))
    return walked


@pytest.mark.parametrize("walk", [False, True], ids=["by_index", "walked"])
def test_a_word_is_credited_to_its_newest_holders_only(client, runtime, monkeypatch, walk):
    """Each word's holders are read newest first, at most WINDOW of them (by sys_id on PostgreSQL, by
    row on SQLite: the primary key read backwards, whatever the cases' creation times): an older
    holder of a common word is not among the similar cases for it. Alike when PostgreSQL reads the
    common words' holders in one walk."""
    monkeypatch.setattr(similar, "WINDOW", 3)
    holders = [create(client, "Zorblax at the depot") for _ in range(3)]  # the oldest first
    case = create(client, "Zorblax quuxite flarnwick")
    walked = walk_common_words(runtime, monkeypatch) if walk else read_by_index(monkeypatch)
    # the word's three newest holders: the case itself and the two newest others
    assert {r["sys_id"] for r in similar_to(client, case)} == set(holders[1:])
    if walk:
        assert walked and "zorblax" in walked[0]


def test_one_walk_credits_every_word_as_the_text_index_does(client, runtime, monkeypatch):
    """PostgreSQL: three common words read in one walk, each credited to its own three newest holders
    (one word's third holder comes before another's in a chunk of the walk), give the same cases and
    scores at every threshold as each word read by the text index."""
    monkeypatch.setattr(similar, "WINDOW", 3)
    for text in ["Zorblax depot", "Zorblax quuxite", "Depot quuxite", "Zorblax depot quuxite", "Zorblax", "Depot",
                 "Zorblax depot", "Quuxite depot", "Zorblax quuxite depot", "Quuxite"]:
        create(client, text)
    case = create(client, "Zorblax quuxite depot")
    read_by_index(monkeypatch)
    thresholds = ["0", "0.4", "0.7", "1"]
    by_index = {t: similar_to(client, case, f"?sysparm_min_score={t}&sysparm_limit=20") for t in thresholds}
    # each word's three newest holders: the case, "Zorblax quuxite depot" and one more each
    assert [len(by_index[t]) for t in thresholds] == [4, 1, 1, 1]
    assert [r["score"] for r in by_index["0"]] == pytest.approx([1.0, 1 / 3, 1 / 3, 1 / 3], abs=1e-4)
    walked = walk_common_words(runtime, monkeypatch)
    for t in thresholds:
        assert similar_to(client, case, f"?sysparm_min_score={t}&sysparm_limit=20") == by_index[t], t
    assert set(walked[0]) == {"zorblax", "quuxite", "depot"}


@pytest.mark.parametrize("walk", [False, True], ids=["by_index", "walked"])
@pytest.mark.parametrize("min_score, found", [("0", ["recent", "old", "newest_depot"]), ("0.5", ["recent", "old"])])
def test_with_a_threshold_each_case_is_credited_as_without_one(client, runtime, monkeypatch, min_score, found, walk):
    """With a minimum score, a word too light to reach it alone (zorblax: common) is read only as far back
    as the oldest holder of the others (quuxite): the cases found are credited as when every word's
    newest holders are read, the old case not with zorblax (older than its three newest holders)."""
    monkeypatch.setattr(similar, "WINDOW", 3)
    made = {"old": create(client, "Zorblax quuxite")}
    for i in range(3):
        made[f"depot{i}"] = create(client, "Zorblax depot")
    made["newest_depot"] = made.pop("depot2")
    made["recent"] = create(client, "Zorblax quuxite")
    case = create(client, "Zorblax quuxite")
    walked = walk_common_words(runtime, monkeypatch) if walk else read_by_index(monkeypatch)
    results = similar_to(client, case, f"?sysparm_min_score={min_score}")
    if walk:
        assert walked and "zorblax" in walked[0]
    names = {sys_id: name for name, sys_id in made.items()}
    assert [names[r["sys_id"]] for r in results] == found
    # zorblax: five others, capped at 3; quuxite: two others
    zorblax, quuxite = math.log(2), math.log(1 + 3 / 2)
    assert [r["score"] for r in results] == pytest.approx(
        [1.0, quuxite / (zorblax + quuxite), zorblax / (zorblax + quuxite)][:len(found)], abs=1e-4)


@pytest.mark.parametrize("walk", [False, True], ids=["by_index", "walked"])
def test_an_old_case_reads_back_to_the_oldest_other_candidate_only(client, runtime, monkeypatch, walk):
    """With a minimum score, a light word (zorblax) is read back to the oldest candidate other than the case
    itself, which is never among its similar cases: an old case's form read every newer record's words (on
    PostgreSQL after a major case's 100,000 children, every child). The case found is credited as without
    a threshold."""
    monkeypatch.setattr(similar, "WINDOW", 3)
    case = create(client, "Zorblax quuxite")  # the oldest holder of quuxite, the word a candidate needs
    depots = [create(client, "Zorblax depot") for _ in range(4)]
    recent = create(client, "Zorblax quuxite")
    walked = walk_common_words(runtime, monkeypatch) if walk else read_by_index(monkeypatch)
    bounds: list = []
    chunk = similar._walk_sql
    monkeypatch.setattr(similar, "_walk_sql", lambda *args: bounds.append(args[4]) or chunk(*args))
    # zorblax: five others, capped at 3 (its newest holders: recent and the two newest depots); quuxite: one
    zorblax, quuxite = math.log(2), math.log(1 + 3 / 1)
    everything = similar_to(client, case, "?sysparm_min_score=0&sysparm_limit=20")
    assert [r["sys_id"] for r in everything] == [recent, depots[3], depots[2]]
    assert [r["score"] for r in everything] == pytest.approx([1.0, *[zorblax / (zorblax + quuxite)] * 2], abs=1e-4)
    bounds.clear()
    assert [(r["sys_id"], r["score"]) for r in similar_to(client, case, "?sysparm_min_score=0.5")] == [(recent, 1.0)]
    if walk:  # zorblax walked, no further back than the recent case
        assert walked[-1] and set(walked[-1]) == {"zorblax"}
        assert bounds and all(bound[0] == recent for bound in bounds)


def test_the_api_narrows_shapes_and_refuses_bad_parameters(client):
    case = create(client, TEXT)
    other = create(client, TEXT, state=10)
    create(client, TEXT)
    found = similar_to(client, case, "?sysparm_query=state=10&sysparm_fields=state&sysparm_display_value=true")
    assert found == [{"sys_id": other, "number": found[0]["number"], "score": 1.0, "state": "Open"}]
    assert len(similar_to(client, case, "?sysparm_limit=1")) == 1
    bad = {
        "?sysparm_list=nope": "sysparm_list",
        "?sysparm_min_score=1.5": "sysparm_min_score",
        "?sysparm_min_score=high": "sysparm_min_score",
        "?sysparm_limit=0": "sysparm_limit",
        "?sysparm_limit=101": "sysparm_limit",
        "?sysparm_query=colour=red": "colour",
        "?sysparm_fields=colour": "colour",
    }
    for query, named in bad.items():
        r = client.get(f"/api/caseloom/similar/{CASE}/{case}{query}", headers=basic("agent"))
        assert r.status_code == 400 and named in str(r.json), (query, r.json)
    assert client.get(f"/api/caseloom/similar/{CASE}/{'0' * 32}", headers=basic("agent")).status_code == 404
    assert client.get(f"/api/caseloom/similar/nope/{case}", headers=basic("agent")).status_code in (400, 404)
    r = client.get(f"/api/caseloom/similar/customer_account/{case}", headers=basic("agent"))
    assert r.status_code == 400 and "no text index" in r.json["error"]["detail"]
    assert client.get(f"/api/caseloom/similar/{CASE}/{case}").status_code == 401


# -- the similar lists and their thresholds -------------------------------------------------------------------

@pytest.mark.parametrize("name, prop, candidate", [
    ("similar_cases", "sn_customerservice.similar_case_threshold", "open"),
    ("similar_major_cases", "sn_customerservice.similar_major_case_threshold", "major"),
])
def test_a_similar_list_at_its_threshold(client, name, prop, candidate):
    case = create(client, TEXT)
    create(client, "Wibblet snorkan")  # two of the case's five words: 0.4, under every threshold
    other = create(client, "Zorblax quuxite flarnwick at the depot", user="mim",  # three: 0.6
                   **({"major_case_state": "proposed"} if candidate == "major" else {}))
    if candidate == "major":
        r = client.post(f"/api/caseloom/actions/{CASE}/{other}/accept_major_case", json={}, headers=basic("mim"))
        assert r.status_code == 200, r.json
    score = similar_to(client, case)[0]["score"]
    assert score == 0.6
    ui_sign_in(client, "agent")
    for threshold, shown in ((math.floor(score * 1000) / 1000, True), (math.ceil(score * 1000) / 1000 + 0.001, False)):
        set_property(client, prop, f"{threshold:.3f}")
        listed = [r["sys_id"] for r in similar_to(client, case, f"?sysparm_list={name}")]
        assert (other in listed) is shown, (threshold, score, listed)
        html = panel(form(client, case), name)
        assert html is not None and (other in html) is shown
        assert f"{threshold:.2f} or more shown" in html


def test_which_lists_a_form_shows(client):
    """An ordinary case shows its similar open and major cases; an accepted major case its suggested
    child cases; a child case none of them."""
    ui_sign_in(client, "mim")
    case = create(client, TEXT)
    html = form(client, case)
    assert panel(html, "similar_cases") and panel(html, "similar_major_cases") and not panel(html, "suggested_child_cases")
    major = create(client, TEXT, user="mim", major_case_state="proposed")
    client.post(f"/api/caseloom/actions/{CASE}/{major}/accept_major_case", json={}, headers=basic("mim"))
    html = form(client, major)
    assert panel(html, "suggested_child_cases") and not panel(html, "similar_cases")
    child = create(client, TEXT, parent=major)
    assert "class=\"similar card" not in form(client, child)


def test_without_javascript_a_link_shows_the_form_with_its_similar_lists(client):
    case = create(client, TEXT)
    twin = create(client, TEXT)
    ui_sign_in(client, "agent")
    r = client.get(f"/ui/similar/{CASE}/{case}")
    assert r.status_code == 302 and r.headers["Location"].endswith(f"sys_id={case}&similar=1")
    page = client.get(r.headers["Location"]).get_data(as_text=True)
    assert twin in panel(page, "similar_cases") and 'hx-trigger="load"' not in page
    assert client.get(f"/ui/similar/{CASE}/{'0' * 32}", headers={"HX-Request": "true"}).status_code == 404
    assert client.get(f"/ui/similar/customer_account/{case}", headers={"HX-Request": "true"}).status_code == 404


def test_suggested_child_cases_are_added_in_one_click(client):
    major = create(client, TEXT + " outage", user="mim", major_case_state="proposed")
    assert client.post(f"/api/caseloom/actions/{CASE}/{major}/accept_major_case", json={},
                       headers=basic("mim")).status_code == 200
    loose = [create(client, TEXT), create(client, "Zorblax quuxite flarnwick wibblet")]
    closed = create(client, TEXT, state=10)
    client.patch(f"{CASES}/{closed}", json={"state": 6, "resolution_code": "solved_remotely", "close_notes": "done"},
                 headers=basic("agent"))
    client.patch(f"{CASES}/{closed}", json={"state": 3}, headers=basic("agent"))
    other_major = create(client, "Another problem", user="mim", major_case_state="proposed")
    client.post(f"/api/caseloom/actions/{CASE}/{other_major}/accept_major_case", json={}, headers=basic("mim"))
    taken = create(client, TEXT, parent=other_major)
    ui_sign_in(client, "agent")
    html = panel(form(client, major), "suggested_child_cases")
    assert all(c in html for c in loose) and closed not in html and taken not in html
    assert html.count(">Add</button>") == 2
    token = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
    r = client.post(f"/ui/action/{CASE}/{major}/add_child_cases", data={"cases": loose[0], "csrf_token": token})
    assert r.status_code == 302
    child = client.get(f"{CASES}/{loose[0]}?sysparm_fields=parent&sysparm_exclude_reference_link=true",
                       headers=basic("agent")).json["result"]
    assert child["parent"] == major
    page = form(client, major)
    assert loose[0] not in panel(page, "suggested_child_cases") and loose[1] in panel(page, "suggested_child_cases")
    assert "Added 1" in page or "added" in page.lower()


# -- the suggestion ---------------------------------------------------------------------------------------------

def cluster(client, count: int, groups: int, text: str = TEXT) -> list[str]:
    """`count` cases with `text` from `groups` accounts (round robin), one API call each."""
    owners = accounts(client, groups)
    return [create(client, text, account=owners[i % groups]) for i in range(count)]


def holders(client) -> list[dict]:
    """The managers' list: Major Issue Management's "Major case suggestions" module."""
    query = ("similar_suggestionISNOTEMPTY^active=true^parentISEMPTY^major_case_stateNOTINproposed,accepted"
             "^ORDERBYDESCsys_updated_on")
    return client.get(f"{CASES}?sysparm_query={query}&sysparm_fields=sys_id,similar_suggestion",
                      headers=basic("mim")).json["result"]


@pytest.mark.parametrize("count, groups, suggested", [(10, 3, True), (9, 3, False), (10, 2, False), (11, 4, True)])
def test_the_suggestion_at_its_edges(client, count, groups, suggested):
    """A new case with at least 10 similar cases from at least 3 accounts since yesterday suggests a major
    case: on its form (with the button proposing it, the reason filled in) and in the managers' list."""
    earlier = cluster(client, count, groups)
    case = create(client, TEXT, account=accounts(client, 1)[0])
    ui_sign_in(client, "agent")
    html = form(client, case)
    banner = SUGGESTION.search(html)
    assert (banner is not None) is suggested
    listed = holders(client)
    if not suggested:
        assert listed == []
        return
    assert banner.groups() == (str(count), str(groups))
    link = re.search(r'<a class="button" href="([^"]+)">Propose major case…</a>', html).group(1)
    page = client.get(link.replace("&amp;", "&")).get_data(as_text=True)
    assert f"{count} similar cases from {groups} accounts since yesterday" in page  # the reason, filled in
    # one case of the cluster holds it, with the counts of the latest arrival: the 11th of 11 earlier
    # ones saw 10 before it; the new case then brought its counts up to date
    assert len(listed) == 1
    holder = listed[0]
    assert holder["sys_id"] == (case if count == 10 else earlier[10])
    assert SUGGESTION.fullmatch(holder["similar_suggestion"]).groups() == (str(count), str(groups))


def test_the_suggestion_counts_since_the_start_of_yesterday_and_follows_its_properties(client, runtime):
    """CSM counts the cases by when they were opened (`date_field: opened_at`), not by when their record was
    made: a case opened three days ago and loaded today (an import) is not new."""
    earlier = cluster(client, 10, 3)
    three_days_ago = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=3)
    with runtime.engine.begin() as conn:  # two of them were opened three days ago
        task = runtime.storage.physical(CASE)
        conn.execute(sa.update(task).where(task.c.sys_id.in_(earlier[:2])).values(opened_at=three_days_ago))
        # and one made three days ago but opened today still counts
        conn.execute(sa.update(task).where(task.c.sys_id == earlier[2]).values(sys_created_on=three_days_ago))
    case = create(client, TEXT)
    ui_sign_in(client, "agent")
    assert SUGGESTION.search(form(client, case)) is None  # 8 since yesterday
    set_property(client, "sn_customerservice.major_case_suggestion_days", "3")
    assert "10 similar cases from 3 accounts since 3 days ago" in form(client, case)
    set_property(client, "sn_customerservice.major_case_suggestion_days", "1")
    set_property(client, "sn_customerservice.major_case_suggestion_cases", "8")
    assert SUGGESTION.search(form(client, case)).groups() == ("8", "3")
    set_property(client, "sn_customerservice.major_case_suggestion_accounts", "4")
    assert SUGGESTION.search(form(client, case)) is None


def test_a_case_whose_text_is_edited_into_a_cluster_raises_the_suggestion(client, runtime):
    """A case opened with other words, edited later to describe the outage (a form or the API), raises the
    suggestion as a new case would; an edit of other fields does not search again."""
    cluster(client, 10, 3)
    assert holders(client) == []  # the tenth saw nine
    case = create(client, "Printer jammed on the third floor", account=accounts(client, 1)[0])
    assert holders(client) == []
    with runtime.transaction() as service:
        service.update(CASE, case, {"priority": 2})
        assert service.follow_ups == []  # no word changed
    r = client.patch(f"{CASES}/{case}", json={"short_description": TEXT}, headers=basic("agent"))
    assert r.status_code == 200, r.json
    worker(client.application)
    [holder] = holders(client)
    assert holder["sys_id"] == case
    assert SUGGESTION.fullmatch(holder["similar_suggestion"]).groups() == ("10", "3")


def test_a_bulk_insert_raises_no_suggestion(client, runtime):
    """Rows written in bulk (an import, demo data, the child cases of a major case) are not each searched."""
    cluster(client, 10, 3)
    with runtime.transaction() as service:
        service.insert_many(CASE, [{"short_description": TEXT} for _ in range(3)])
        assert service.follow_ups == []
    worker(client.application)
    assert holders(client) == []


def test_a_decimal_property_is_checked(client):
    prop = client.get("/api/now/table/sys_properties?sysparm_query=name=sn_customerservice.similar_case_threshold",
                      headers=basic("admin")).json["result"][0]
    assert prop["type"] == "decimal" and float(prop["value"]) == 0.7
    r = client.patch(f"/api/now/table/sys_properties/{prop['sys_id']}", json={"value": "high"}, headers=basic("admin"))
    assert r.status_code == 400 and "expected a number" in str(r.json)


# -- access ----------------------------------------------------------------------------------------------------

def test_a_customer_finds_only_the_cases_they_may_read(client):
    mine = client.get("/api/now/table/sn_customerservice_case?sysparm_limit=1&sysparm_fields=sys_id,account,contact"
                      "&sysparm_exclude_reference_link=true", headers=basic("customer")).json["result"][0]
    own = create(client, TEXT, account=mine["account"], contact=mine["contact"])
    create(client, TEXT, account=mine["account"], contact=mine["contact"])
    stranger = create(client, TEXT)  # no account: another customer's cannot see it
    found = {r["sys_id"] for r in similar_to(client, own, user="customer")}
    assert len(found) == 1 and stranger not in found
    r = client.get(f"/api/caseloom/similar/{CASE}/{stranger}", headers=basic("customer"))
    assert r.status_code == 404


# -- bad definitions --------------------------------------------------------------------------------------------

BAD = {
    "no text index": ("text_index: [short_description, description]\n", "",
                      "similar lists need a text index"),
    "unknown property": ("min_score_property: sn_customerservice.similar_case_threshold\n    limit: 5\n    # many",
                         "min_score_property: x.nope\n    limit: 5\n    # many", "unknown system property 'x.nope'"),
    "property of another type": ("min_score_property: sn_customerservice.similar_major_case_threshold",
                                 "min_score_property: sn_customerservice.parent_child_case_sync",
                                 "is a boolean property, not a decimal one"),
    "score out of range": ("min_score: 0.75", "min_score: 1.5", "1.5"),
    "unknown add action": ("add: {action: add_child_cases, input: cases}", "add: {action: nope, input: cases}",
                           "unknown action 'nope'"),
    "add input not records": ("add: {action: add_child_cases, input: cases}",
                              "add: {action: propose_major_case, input: reason}", "has no records input 'reason'"),
    "group_by not a field": ("group_by: account", "group_by: colour", "'colour' is not a stored field"),
    "date_field not a date": ("date_field: opened_at", "date_field: priority",
                              "'priority' is not a stored date or date-time field"),
    "field not text": ("field: similar_suggestion", "field: priority", "'priority' is not a string or text field"),
    "unknown message name": ("{{ count }} similar cases", "{{ user }} similar cases", "unknown name 'user'"),
    "bad condition": ("condition: major_case_state=accepted^active=true", "condition: colour=red", "colour"),
    "duplicate name": ("  - name: similar_major_cases", "  - name: similar_cases", "declared twice"),
}


@pytest.mark.parametrize("old, new, message", BAD.values(), ids=BAD.keys())
def test_a_mistake_in_a_similar_list_is_located_and_named(definitions_copy, old, new, message):
    errors = errors_after_edit(definitions_copy, "tables/sn_customerservice_case.yaml", old, new)
    assert any("sn_customerservice_case.yaml:" in e and message in e for e in errors), errors


# -- a second application: a help desk's tickets ----------------------------------------------------------------

SMALL = {
    "tables/x_ticket.yaml": """
table: x_ticket
number: {prefix: TKT, digits: 5}
display: number
fields:
  number: {type: string, read_only: true}
  title: {type: string}
  body: {type: text}
  site: {type: string}
  problem: {type: reference, to: x_ticket}
  is_problem: {type: boolean, default: false}
  hint: {type: string, max_length: 200, read_only: true}
text_index: [title, body]
similar:
  - name: alike
    label: Alike tickets
    when: is_problem=false
    condition: is_problem=false^problemISEMPTY
    min_score: 0.5
    suggest:
      group_by: site
      min_records: 3
      min_groups: 2
      since_days: 0
      message: "{{ count }} alike from {{ groups }} sites today"
      field: hint
  - name: to_link
    label: Tickets to link
    when: is_problem=true
    condition: is_problem=false^problemISEMPTY
    min_score_property: x.link_score
    add: {action: link, input: tickets}
""",
    "properties/x.yaml": "properties:\n  x.link_score: {type: decimal, default: 0.6}\n",
    "roles.yaml": "roles:\n  x_desk: {}\n",
    "access/x.yaml": "access:\n  - {table: x_ticket, operations: [read, create, write], roles: [x_desk]}\n",
    "actions/x.yaml": """
actions:
  - name: link
    table: x_ticket
    label: Link tickets
    roles: [x_desk]
    condition: {field: is_problem, op: eq, value: true}
    inputs:
      - {name: tickets, type: records, table: x_ticket, mandatory: true, label: Tickets}
    effects:
      - reparent: {input: tickets, field: problem, noun: tickets}
""",
}


def test_similar_lists_of_a_second_application(config, tmp_path):
    from small_app import small_app

    with small_app(config, tmp_path, SMALL, {"desk": ["x_desk"]}) as made:
        desk = made.api("desk")
        ids = []
        for site in ("north", "south", "north"):
            r = desk.post("/api/now/table/x_ticket", {"title": "Badge reader rejects cards", "site": site})
            assert r.status_code == 201, r.json
            ids.append(r.json["result"]["sys_id"])
        worker(made.app)
        r = desk.post("/api/now/table/x_ticket", {"title": "Badge reader rejects cards", "body": "lobby", "site": "east"})
        worker(made.app)
        fourth = desk.get(f"/api/now/table/x_ticket/{r.json['result']['sys_id']}").json["result"]
        assert fourth["hint"] == "3 alike from 2 sites today"
        found = desk.get(f"/api/caseloom/similar/x_ticket/{ids[0]}?sysparm_list=alike").json["result"]
        assert {f["sys_id"] for f in found} == {ids[1], ids[2], fourth["sys_id"]}
        assert all(f["number"].startswith("TKT") and 0 < f["score"] <= 1 for f in found)
        problem = desk.post("/api/now/table/x_ticket", {"title": "Badge reader rejects cards", "is_problem": "true"}
                            ).json["result"]["sys_id"]
        listed = desk.get(f"/api/caseloom/similar/x_ticket/{problem}?sysparm_list=to_link").json["result"]
        assert len(listed) == 4
        r = desk.post(f"/api/caseloom/actions/x_ticket/{problem}/link", {"tickets": [ids[0]]})
        assert r.status_code == 200, r.json
        listed = desk.get(f"/api/caseloom/similar/x_ticket/{problem}?sysparm_list=to_link").json["result"]
        assert ids[0] not in {f["sys_id"] for f in listed} and len(listed) == 3
