"""The major case workspace (declared in definitions/workspaces): a record with children through a
declared reference shows its summary, children by state, who needs attention, its affected customers,
what was sent to them and its timeline, in words; the Candidates and Major cases lists show child
counts, who proposed it, why, and age."""

from __future__ import annotations

import html
import re

import pytest

from caseloom.jobs.registry import execute_job
from conftest import basic, ui_sign_in

CASE = "sn_customerservice_case"
CASES = f"/api/now/table/{CASE}"
ACTIONS = f"/api/caseloom/actions/{CASE}"


def section(page: str, start: str, end: str = "</section>") -> str:
    page = html.unescape(page)
    at = page.index(start)
    return re.sub(r"\s+", " ", page[at:page.index(end, at)])


@pytest.fixture
def major(client, runtime):
    return accepted_major(client, runtime)


def accepted_major(client, runtime) -> dict:
    """An accepted major case proposed from a customer's case, with a recipients list and its children."""
    case = client.get(f"{CASES}?sysparm_query=state=10^accountISNOTEMPTY^parentISEMPTY^major_case_stateISEMPTY"
                      "&sysparm_limit=1", headers=basic("admin")).json["result"][0]
    r = client.post(f"{ACTIONS}/{case['sys_id']}/propose_major_case", json={"reason": "Storage down in Frankfurt"},
                    headers=basic("agent"))
    assert r.status_code == 200, r.json
    r = client.post(f"{ACTIONS}/{case['sys_id']}/accept_major_case", json={}, headers=basic("mim"))
    major_id = r.json["details"]["created"][0]["sys_id"]
    lists = client.get("/api/now/table/sn_publications_recipients_list?sysparm_query=type=accounts"
                       "&sysparm_limit=1", headers=basic("admin")).json["result"]
    assert client.patch(f"{CASES}/{major_id}", json={"recipient_list": lists[0]["sys_id"]},
                        headers=basic("mim")).status_code == 200
    r = client.post(f"{ACTIONS}/{major_id}/create_child_cases", json={"comments": "We are on it."},
                    headers=basic("mim"))
    assert r.status_code == 202, r.json
    execute_job(runtime, r.json["result"]["job"])
    return {"sys_id": major_id, "first_child": case, "list": lists[0]}


def test_the_major_case_page_is_a_workspace_in_words(client, major):
    children = client.get(f"{CASES}?sysparm_query=parent={major['sys_id']}&sysparm_fields=state",
                          headers=basic("admin")).json["result"]
    ui_sign_in(client, "mim")
    page = client.get(f"/{CASE}.do?sys_id={major['sys_id']}").get_data(as_text=True)
    ws = section(page, '<section class="workspace card"', '<section class="ws-timeline"')
    assert "Major case at a glance" in ws
    assert re.search(r"<dt>State</dt><dd>Open</dd>", ws)
    assert "<dt>Proposed by</dt><dd><a href=\"/sys_user.do?sys_id=" in ws
    assert f'id="ws-children-total">{len(children)}</span>' in ws
    by_state = re.findall(r'<span class="ws-count">(\d+)</span> ([A-Za-z ]+)</a>', ws)
    assert sum(int(n) for n, _ in by_state) == len(children) and {label for _, label in by_state} <= {
        "New", "Open", "Awaiting Info", "Resolved", "Closed", "Canceled"}
    assert f"{major['list']['name']}</a>: " in ws
    # what was sent is counted after the page (it reads every journal entry and e-mail of the children)
    url = f"/ui/workspace/{CASE}/{major['sys_id']}/communications"
    assert f'hx-get="{url}" hx-trigger="load"' in ws and not re.search(r"\d+ e-mails: ", ws)
    comms = section(client.get(url).get_data(as_text=True), '<section class="ws-communications"')
    assert re.search(r"\d+ e-mails: \d+ delivered, \d+ failed, \d+ waiting", comms)
    assert re.search(r"[1-9]\d* additional comments", comms)
    # without JavaScript, the link in its place shows them in the page
    inline = client.get(f"/{CASE}.do?sys_id={major['sys_id']}&communications=1").get_data(as_text=True)
    assert re.search(r"\d+ e-mails: \d+ delivered", section(inline, '<section class="ws-communications"'))
    timeline = section(page, '<section class="ws-timeline"')
    assert "Create child cases started" in timeline and "Create child cases done" in timeline
    assert "</time> · Proposed</li>" in timeline and "Recipients list set to " in timeline
    assert not re.search(r"[0-9a-f]{32}", re.sub(r'(href|hx-get)="[^"]*"', "", ws + timeline))  # no sys_id is read


def test_a_child_commented_on_by_someone_else_needs_attention(client, major):
    child = major["first_child"]
    assert client.patch(f"{CASES}/{child['sys_id']}", json={"comments": "Still broken here"},
                        headers=basic("admin")).status_code == 200
    ui_sign_in(client, "mim")
    ws = section(client.get(f"/{CASE}.do?sys_id={major['sys_id']}").get_data(as_text=True),
                 '<section class="workspace card"', '<section class="ws-timeline"')
    assert "1 needs attention" in ws and f">{child['number']}</a>" in ws


def test_the_workspace_refreshes_alone_and_only_where_declared(client, major):
    ui_sign_in(client, "mim")
    part = client.get(f"/ui/workspace/{CASE}/{major['sys_id']}")
    # the job is over: the workspace waits for the next one; it keeps its communications when it refreshes
    text = part.get_data(as_text=True)
    assert part.status_code == 200 and 'id="workspace"' in text and 'hx-trigger="job-finished from:body"' in text
    assert '<div id="ws-communications" hx-preserve="true">' in text
    # the e-mails to the customers still wait for delivery, so the communications look again every 5 s
    comms = client.get(f"/ui/workspace/{CASE}/{major['sys_id']}/communications").get_data(as_text=True)
    assert 'hx-trigger="every 5s, job-finished from:body"' in comms
    plain = client.get(f"{CASES}?sysparm_query=major_case_stateISEMPTY^parentISEMPTY&sysparm_limit=1",
                       headers=basic("admin")).json["result"][0]
    assert client.get(f"/ui/workspace/{CASE}/{plain['sys_id']}").status_code == 404
    assert client.get(f"/ui/workspace/{CASE}/{plain['sys_id']}/communications").status_code == 404
    assert 'class="workspace card"' not in client.get(f"/{CASE}.do?sys_id={plain['sys_id']}").get_data(as_text=True)


@pytest.mark.parametrize(("base", "took", "every"), [
    (5, 0.004, 5),  # a few children: the declared pace
    (2, 0.2, 2),  # reads of a tenth of the time between refreshes: still the declared pace
    (5, 0.61, 7),  # longer reads: at least ten times as long between refreshes, in whole seconds
    (2, 3.0, 30),  # a million children's counts
])
def test_a_workspace_refreshes_no_more_often_than_its_reads_allow(base, took, every):
    from caseloom.web.ui.workspace import refresh_every

    assert refresh_every(base, took) == every


def test_a_workspace_whose_reads_are_slow_says_it_refreshes_less_often(client, major, monkeypatch):
    from caseloom.web.ui import workspace

    ui_sign_in(client, "mim")
    url = f"/ui/workspace/{CASE}/{major['sys_id']}/communications"
    part = client.get(url).get_data(as_text=True)
    assert "Updated every 5 seconds while e-mails about it wait for delivery." in part
    monkeypatch.setattr(workspace, "READ_SHARE", 1e-4)  # as if its reads took a thousand times as long
    part = client.get(url).get_data(as_text=True)
    every = int(re.search(r'hx-trigger="every (\d+)s, job-finished from:body"', part).group(1))
    assert every > 5 and f"Updated every {every} seconds while e-mails about it wait for delivery." in part


def test_the_major_cases_list_shows_children_who_proposed_why_and_age(client, major):
    ui_sign_in(client, "mim")
    home = client.get("/").get_data(as_text=True)
    link = html.unescape(re.search(r'<a href="([^"]*)"[^>]*>Major cases</a>', home).group(1))
    assert "sysparm_view=major_case" in link
    page = html.unescape(client.get(link).get_data(as_text=True))
    headers = re.findall(r'<th scope="col"[^>]*>\s*(?:<a[^>]*>)?([^<▲▼]+?)\s*(?:[▲▼])?\s*(?:</a>)?\s*</th>', page)
    assert headers[-4:] == ["Children", "Proposed by", "Why a major issue", "Age"]
    count = client.get(f"{CASES}?sysparm_query=parent={major['sys_id']}&sysparm_limit=1",
                       headers=basic("admin")).headers["X-Total-Count"]
    row = page[page.index(f"sys_id={major['sys_id']}"):]
    row = row[:row.index("</tr>")]
    assert f"<td>{count}</td>" in row and "Storage down in Frankfurt" in row


def test_a_child_of_a_major_case_says_so_in_its_banner(client, major):
    number = client.get(f"{CASES}/{major['sys_id']}?sysparm_fields=number", headers=basic("admin")).json["result"]
    ui_sign_in(client, "agent")
    page = html.unescape(client.get(f"/{CASE}.do?sys_id={major['first_child']['sys_id']}").get_data(as_text=True))
    banner = re.search(r'<p class="parent-banner">(.*?)</p>', page).group(1)
    assert banner.startswith(f'Part of major case <a href="/{CASE}.do?sys_id={major["sys_id"]}">{number["number"]}</a>: ')


def test_an_unassigned_child_commented_on_needs_attention_and_its_assignee_clears_it(client, major):
    child = client.get(f"{CASES}?sysparm_query=parent={major['sys_id']}^assigned_toISEMPTY&sysparm_limit=1"
                       "&sysparm_fields=sys_id", headers=basic("admin")).json["result"][0]
    assert client.patch(f"{CASES}/{child['sys_id']}", json={"comments": "Any news?"},
                        headers=basic("admin")).status_code == 200
    flagged = client.get(f"{CASES}/{child['sys_id']}?sysparm_fields=needs_attention", headers=basic("admin")).json
    assert flagged["result"]["needs_attention"] == "true"
    agent = client.get("/api/now/table/sys_user?sysparm_query=user_name=agent", headers=basic("admin")).json["result"][0]
    client.patch(f"{CASES}/{child['sys_id']}", json={"assigned_to": agent["sys_id"]}, headers=basic("admin"))
    client.patch(f"{CASES}/{child['sys_id']}", json={"comments": "A fix is coming"}, headers=basic("agent"))
    cleared = client.get(f"{CASES}/{child['sys_id']}?sysparm_fields=needs_attention", headers=basic("admin")).json
    assert cleared["result"]["needs_attention"] == "false"


def test_cases_added_as_children_by_one_action_are_one_line_of_the_timeline(client, major):
    """The timeline groups the children added per save: one action adding three cases is one line."""
    cases = client.get(f"{CASES}?sysparm_query=stateIN1,10,18^parentISEMPTY^major_case_stateISEMPTY&sysparm_limit=3"
                       "&sysparm_fields=sys_id", headers=basic("admin")).json["result"]
    assert len(cases) == 3
    r = client.post(f"{ACTIONS}/{major['sys_id']}/add_child_cases", json={"cases": [c["sys_id"] for c in cases]},
                    headers=basic("mim"))
    assert r.status_code == 200 and r.json["details"]["added"] == 3, r.json
    ui_sign_in(client, "mim")
    timeline = section(client.get(f"/{CASE}.do?sys_id={major['sys_id']}").get_data(as_text=True),
                       '<section class="ws-timeline"')
    assert timeline.count("3 cases added as children") == 1
    assert timeline.count("1 case added as a child") == 1  # the case the major case was proposed from


def timeline_steps(client, sys_id: str) -> list[str]:
    timeline = section(client.get(f"/{CASE}.do?sys_id={sys_id}").get_data(as_text=True), '<section class="ws-timeline"')
    return [re.sub(r"^[\d: -]+</time> · ", "", item) for item in re.findall(r"<li><time>(.*?)</li>", timeline)]


def test_the_timeline_tells_each_step_once_in_the_order_it_happened(client, major):
    """A case is created, then proposed (by whom), then accepted, in that order even within one second; a
    moment the workspace shows on its own line ("Proposed", from `proposed_on`) is not told again in the save
    that set it ("Proposed on set to ..."). A major case made from a customer's case starts with both (proposed
    on that case)."""
    ui_sign_in(client, "mim")
    made = timeline_steps(client, major["sys_id"])
    # proposed on the customer's case, the second before the major case was made or the same one
    assert sorted(made[:2]) == sorted([f"mim · Case {number(client, major['sys_id'])} created", "Proposed"]), made
    r = client.post(CASES, json={"short_description": "Storage outage in Frankfurt", "priority": "1"},
                    headers=basic("agent"))
    case = r.json["result"]["sys_id"]
    assert client.post(f"{ACTIONS}/{case}/propose_major_case", json={"reason": "Many customers"},
                       headers=basic("agent")).status_code == 200
    r = client.post(f"{ACTIONS}/{case}/accept_major_case", json={}, headers=basic("mim"))
    assert r.status_code == 200 and not r.json.get("details", {}).get("created"), r.json  # accepted as it is
    steps = timeline_steps(client, case)
    assert steps == [f"agent · Case {number(client, case)} created", "agent · Proposed",
                     "agent · Major case state set to Proposed",
                     "mim · Major case state changed from Proposed to Accepted"], steps


def number(client, sys_id: str) -> str:
    return client.get(f"{CASES}/{sys_id}?sysparm_fields=number", headers=basic("admin")).json["result"]["number"]


def test_a_major_case_page_counts_its_children_once_and_finds_who_added_them_by_an_index(app, client, major):
    """The children of a major case are counted, by state and by who needs attention, in one statement that
    both the related list and the workspace use; the page of them is read along an index in their order;
    and the timeline's "added as children" reads the audit's partial index of the children field, never the
    whole audit (each was 100 to 280 ms with 100,000 children on PostgreSQL)."""
    import sqlalchemy as sa

    from caseloom.web import db

    ui_sign_in(client, "mim")
    path = f"/{CASE}.do?sys_id={major['sys_id']}"
    client.get(path)
    seen: list[tuple[str, object]] = []
    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", lambda c, cur, statement, params, ctx, many:
                    seen.append((statement, params)))
    page = client.get(path).get_data(as_text=True)
    counts = [s for s, _ in seen if re.match(r"\s*SELECT count\(\*\)", s) and "FROM task" in s and ".parent =" in s]
    assert len(counts) == 1 and "GROUP BY" in counts[0] and "needs_attention" in counts[0], counts
    assert 'id="ws-children-total">' in page
    added = [(s, p) for s, p in seen if "FROM sys_audit" in s and "GROUP BY" in s]
    assert len(added) == 1
    statement, params = added[0]
    # the related list's page of many children (a short list of them is read from its matches on PostgreSQL)
    children = (f"SELECT sys_id FROM task WHERE sys_class_name = '{CASE}' AND parent = '{major['sys_id']}' "
                "ORDER BY sys_id LIMIT 10")
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":  # the test's tables are small: the planner would rather read them
            conn.exec_driver_sql("SET enable_seqscan = off")
            plan = conn.exec_driver_sql("EXPLAIN " + statement, params).scalars().all()
            ordered = conn.exec_driver_sql("EXPLAIN " + children).scalars().all()
        else:
            plan = [row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)]
            ordered = [row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + children)]
    assert any("ixa_sys_audit_parent_newvalue" in line for line in plan), plan
    assert any("ixn_task_parent_sys_id" in line for line in ordered), ordered
    assert not any("TEMP B-TREE FOR ORDER BY" in line or line.lstrip().startswith("Sort") for line in ordered), ordered
