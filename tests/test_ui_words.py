"""The UI names things in words: history in labels and display values, actions say what happened to
which record, and a bulk edit that changed nothing is not reported as a success."""

from __future__ import annotations

import html
import re

import pytest

from conftest import basic, form_token, ui_sign_in

CASE = "sn_customerservice_case"
CASES = f"/api/now/table/{CASE}"


def a_case(client, query: str) -> dict:
    rows = client.get(f"{CASES}?sysparm_query={query}&sysparm_limit=1", headers=basic("admin")).json["result"]
    return rows[0]


def flashes(page: str) -> list[tuple[str, str]]:
    return [(cls, html.unescape(text)) for cls, text in re.findall(r'<p class="flash ([a-z]+)"[^>]*>([^<]*)</p>', page)]


def test_history_reads_choice_labels_and_display_values(client):
    case = a_case(client, "priority=4^accountISNOTEMPTY")
    account = client.get("/api/now/table/customer_account?sysparm_query=nameISNOTEMPTY&sysparm_limit=2",
                         headers=basic("admin")).json["result"][-1]
    r = client.patch(f"{CASES}/{case['sys_id']}", json={"priority": "1", "account": account["sys_id"]},
                     headers=basic("agent"))
    assert r.status_code == 200, r.json
    ui_sign_in(client, "agent")
    page = html.unescape(client.get(f"/{CASE}.do?sys_id={case['sys_id']}").get_data(as_text=True))
    history = page[page.index('<details class="history card">'):]
    history = history[:history.index("</details>")]
    assert "<td>Priority</td><td>4 - Low</td><td>1 - Critical</td>" in history
    assert f"<td>{account['name']}</td>" in history
    assert account["sys_id"] not in history


def test_history_names_a_deleted_record_in_words_not_by_its_sys_id(client):
    case = a_case(client, "priority=4^accountISNOTEMPTY")
    made = client.post("/api/now/table/customer_account", json={"name": "Short-lived Ltd"}, headers=basic("admin"))
    account = made.json["result"]["sys_id"]
    assert client.patch(f"{CASES}/{case['sys_id']}", json={"account": account}, headers=basic("agent")).status_code == 200
    assert client.delete(f"/api/now/table/customer_account/{account}", headers=basic("admin")).status_code == 204
    ui_sign_in(client, "agent")
    page = html.unescape(client.get(f"/{CASE}.do?sys_id={case['sys_id']}").get_data(as_text=True))
    history = page[page.index('<details class="history card">'):]
    history = history[:history.index("</details>")]
    assert "(a deleted record)" in history and account not in history


def test_an_action_says_what_it_did_to_which_record(client):
    case = a_case(client, "state=10^parentISEMPTY^major_case_stateISEMPTY")
    ui_sign_in(client, "agent")
    url = f"/{CASE}.do?sys_id={case['sys_id']}"
    token = form_token(client, url)
    r = client.post(f"/ui/action/{CASE}/{case['sys_id']}/propose_major_case",
                    data={"reason": "Many customers", "csrf_token": token})
    assert r.status_code == 302
    shown = flashes(client.get(url).get_data(as_text=True))
    assert shown == [("message", f"Propose major case: done on case {case['number']}.")]


def test_a_bulk_edit_that_changed_nothing_is_a_warning(client):
    ids = [c["sys_id"] for c in client.get(f"{CASES}?sysparm_query=priority=2&sysparm_limit=2",
                                           headers=basic("admin")).json["result"]]
    ui_sign_in(client, "agent")
    token = form_token(client, f"/{CASE}_list.do")
    back = f"/{CASE}_list.do"
    client.post(f"/ui/bulk/{CASE}", data={"bulk_field": "priority", "bulk_value": "2", "sys_id": ids,
                                          "back": back, "csrf_token": token})
    assert flashes(client.get(back).get_data(as_text=True)) == [
        ("warning", f"Bulk edit of Priority: 0 of {len(ids)} records changed")]
    client.post(f"/ui/bulk/{CASE}", data={"bulk_field": "priority", "bulk_value": "3", "sys_id": ids,
                                          "back": back, "csrf_token": token})
    assert flashes(client.get(back).get_data(as_text=True)) == [
        ("message", f"Bulk edit of Priority: {len(ids)} of {len(ids)} records changed")]


def test_adding_a_filter_row_keeps_the_member_list_the_condition_is_for(client):
    lists = client.get("/api/now/table/sn_publications_recipients_list?sysparm_query=type=accounts&sysparm_limit=1",
                       headers=basic("admin")).json["result"]
    target = f"sn_publications_recipients_list:{lists[0]['sys_id']}"
    ui_sign_in(client, "admin")
    url = f"/customer_account_list.do?condition_for={target}&sysparm_query=country=DE"
    token = form_token(client, url)
    fragment = client.post(f"/customer_account_list.do?condition_for={target}", headers={"HX-Request": "true"},
                           data={"f_join": "and", "f_field": "country", "f_op": "eq", "f_value": "DE",
                                 "add_row": "or", "csrf_token": token}).get_data(as_text=True)
    wanted = f"/customer_account_list.do?condition_for={target}"
    assert f'action="{wanted}"' in fragment and fragment.count(f'hx-post="{wanted}"') == 2
    assert fragment.count('name="f_field"') == 2  # the row typed so far, and the new OR row


def test_the_applied_filter_reads_as_a_sentence_with_the_encoded_query_to_copy(client):
    account = client.get("/api/now/table/customer_account?sysparm_query=nameISNOTEMPTY&sysparm_limit=1",
                         headers=basic("admin")).json["result"][0]
    ui_sign_in(client, "agent")
    encoded = f"stateIN1,10,18^priority=1^ORaccount={account['sys_id']}^ORDERBYDESCnumber"
    page = html.unescape(client.get(f"/{CASE}_list.do?sysparm_query={encoded}").get_data(as_text=True))
    sentence = re.search(r'<span class="filter-sentence">([^<]*)</span>', page).group(1)
    assert sentence == (f"State is one of New, Open, Awaiting Info and (Priority is 1 - Critical or Account is "
                        f"{account['name']}); ordered by Number (descending)")
    assert f'readonly value="{encoded}"' in page


@pytest.mark.parametrize("query, sentence", [
    ("opened_atONThis week@javascript:gs.beginningOfThisWeek()@javascript:gs.endOfThisWeek()",
     "Opened at at least the start of this week and Opened at at most the end of this week"),
    ("opened_atBETWEENjavascript:gs.daysAgoStart(7)@javascript:gs.daysAgoEnd(1)",
     "Opened at at least the start of 7 days ago and Opened at at most the end of yesterday"),
    ("opened_atNOTONLast month@javascript:gs.beginningOfLastMonth()@javascript:gs.endOfLastMonth()",
     "Opened at less than the start of last month or Opened at greater than the end of last month or Opened at is "
     "empty"),
])
def test_a_date_range_from_servicenow_s_filter_reads_as_its_period(client, query, sentence):
    """ServiceNow's ON, BETWEEN and NOTON, pasted into a list's URL, read as the comparisons they make, their
    dynamic ends in words."""
    ui_sign_in(client, "agent")
    page = html.unescape(client.get(f"/{CASE}_list.do", query_string={"sysparm_query": query}).get_data(as_text=True))
    assert re.search(r'<span class="filter-sentence">([^<]*)</span>', page).group(1) == sentence


@pytest.mark.parametrize("query, words", [
    ("opened_at>2026-13-45", "Opened at: expected a date and time"),
    ("priority=abc", "Priority: expected a whole number, got 'abc'"),
    ("account.name>", "Account › Name: greater than takes a value"),
])
def test_a_filter_the_list_cannot_apply_names_the_field_by_its_label(client, query, words):
    ui_sign_in(client, "agent")
    page = html.unescape(client.get(f"/{CASE}_list.do", query_string={"sysparm_query": query}).get_data(as_text=True))
    error = re.search(r'<p class="error" role="alert">([^<]*)</p>', page).group(1)
    assert error.startswith(words), error


def test_a_reference_typed_by_a_name_no_record_has_is_named_in_words(client):
    case = a_case(client, "state=10")
    ui_sign_in(client, "agent")
    url = f"/{CASE}.do?sys_id={case['sys_id']}"
    token = form_token(client, url)
    r = client.post(url, data={"account": "", "account__display": "Acme 999", "csrf_token": token})
    page = html.unescape(r.get_data(as_text=True))
    assert r.status_code == 422 and "no account named 'Acme 999'" in page
    assert "32 hex" not in page


def test_an_action_with_inputs_works_without_javascript(client):
    """The action's button submits a GET to the action's own page; its form posts as the dialog does."""
    case = a_case(client, "state=10^parentISEMPTY^major_case_stateISEMPTY")
    ui_sign_in(client, "agent")
    url = f"/{CASE}.do?sys_id={case['sys_id']}"
    form = client.get(url).get_data(as_text=True)
    page_url = f"/ui/action/{CASE}/{case['sys_id']}/propose_major_case"
    assert f'<form class="inline" method="get" action="{page_url}">' in form
    page = client.get(page_url)
    text = html.unescape(page.get_data(as_text=True))
    assert page.status_code == 200 and '<label for="action-reason">Why is this a major issue?' in text
    token = re.search(r'name="csrf_token" value="([^"]+)"', text).group(1)
    r = client.post(page_url, data={"reason": "Many customers", "csrf_token": token})
    assert r.status_code == 302 and r.headers["Location"].endswith(url)
    assert flashes(client.get(url).get_data(as_text=True)) == [
        ("message", f"Propose major case: done on case {case['number']}.")]
    # proposed already: the page says so instead of offering it again
    r = client.get(page_url)
    assert r.status_code == 302
    assert flashes(client.get(url).get_data(as_text=True)) == [
        ("error", "Propose major case: not available for this case now.")]


def test_a_child_record_links_up_to_its_parent(client):
    agent = {"headers": basic("agent")}
    parent = client.post(CASES, json={"short_description": "Storage outage", "major_case_state": "proposed"},
                         **agent).json["result"]
    child = client.post(CASES, json={"short_description": "My storage is down", "parent": parent["sys_id"]},
                        **agent).json["result"]
    ui_sign_in(client, "agent")
    page = html.unescape(client.get(f"/{CASE}.do?sys_id={child['sys_id']}").get_data(as_text=True))
    banner = re.search(r'<p class="parent-banner">(.*?)</p>', page).group(1)
    assert banner == (f'Part of case <a href="/{CASE}.do?sys_id={parent["sys_id"]}">{parent["number"]}</a>: '
                      f"Storage outage")
    own = html.unescape(client.get(f"/{CASE}.do?sys_id={parent['sys_id']}").get_data(as_text=True))
    assert 'class="parent-banner"' not in own


def test_accepting_a_customers_case_lands_on_the_new_major_case(client):
    case = a_case(client, "state=10^parentISEMPTY^major_case_stateISEMPTY^accountISNOTEMPTY")
    r = client.post(f"/api/caseloom/actions/{CASE}/{case['sys_id']}/propose_major_case", json={"reason": "Many"},
                    headers=basic("agent"))
    assert r.status_code == 200, r.json
    ui_sign_in(client, "mim")
    url = f"/{CASE}.do?sys_id={case['sys_id']}"
    r = client.post(f"/ui/action/{CASE}/{case['sys_id']}/accept_major_case", data={"csrf_token": form_token(client, url)})
    assert r.status_code == 302
    child = client.get(f"{CASES}/{case['sys_id']}?sysparm_fields=parent&sysparm_exclude_reference_link=true",
                       headers=basic("admin")).json["result"]
    assert child["parent"] and r.headers["Location"].endswith(f"/{CASE}.do?sys_id={child['parent']}")
    major = client.get(f"{CASES}/{child['parent']}?sysparm_fields=number", headers=basic("admin")).json["result"]
    assert flashes(client.get(r.headers["Location"]).get_data(as_text=True)) == [
        ("message", f"Accept major case: done on case {case['number']}. Created case {major['number']}.")]


def test_a_member_preview_shows_the_members_declared_columns_in_words(client):
    lists = client.get("/api/now/table/sn_publications_recipients_list?sysparm_query=type=accounts^conditionsISNOTEMPTY"
                       "&sysparm_limit=1", headers=basic("admin")).json["result"]
    ui_sign_in(client, "admin")
    fragment = html.unescape(client.get(f"/ui/members/sn_publications_recipients_list/{lists[0]['sys_id']}/preview")
                             .get_data(as_text=True))
    headers = re.findall(r'<th scope="col">([^<]*)</th>', fragment)
    assert headers == ["Number", "Name", "Primary contact", "Country", "Industry", "Active"]  # the declared list
    assert re.search(r'<td><a href="/customer_account\.do\?sys_id=[0-9a-f]{32}">[^<]+</a></td>', fragment)
    assert not re.search(r"<td>[0-9a-f]{32}</td>", fragment)


def test_a_finished_job_reloads_the_records_related_lists(client):
    from caseloom.jobs.progress import create_job, finish_job

    case = a_case(client, "state=10^parentISEMPTY")
    rt = client.application.extensions["caseloom"]
    with rt.engine.begin() as conn:
        job = create_job(conn, rt.storage, "action:create_child_cases", created_by="admin",
                         target_table=CASE, target_sys_id=case["sys_id"])
    ui_sign_in(client, "admin")
    running = client.get(f"/ui/job/{job}")
    assert running.status_code == 200 and "HX-Trigger" not in running.headers
    with rt.engine.begin() as conn:
        finish_job(conn, rt.storage, job, "3 child records created", done=3, total=3)
    done = client.get(f"/ui/job/{job}")
    assert done.headers["HX-Trigger"] == "job-finished"
    form = client.get(f"/{CASE}.do?sys_id={case['sys_id']}").get_data(as_text=True)
    assert f'hx-get="/ui/related/{CASE}/{case["sys_id"]}/0?first=1" hx-trigger="job-finished from:body"' in form


def test_a_form_shows_every_field_error_at_once(client):
    ui_sign_in(client, "agent")
    url = f"/{CASE}.do?sys_id=-1"
    token = form_token(client, url)
    r = client.post(url, data={"short_description": "", "priority": "9", "csrf_token": token})
    page = html.unescape(r.get_data(as_text=True))
    assert r.status_code == 422
    errors = re.findall(r'<p class="field-error"[^>]*>([^<]*)</p>', page)
    assert len(errors) >= 2, errors
    assert any("mandatory" in e for e in errors) and any("'9'" in e for e in errors), errors


def test_a_list_takes_a_page_size_and_a_page_to_go_to(client, runtime):
    with runtime.transaction() as service:  # enough rows for three pages of 20
        service.insert_many(CASE, [{"short_description": f"Paging {i}"} for i in range(50)])
    total = int(client.get(f"{CASES}?sysparm_limit=1", headers=basic("admin")).headers["X-Total-Count"])
    ui_sign_in(client, "agent")
    page = html.unescape(client.get(f"/{CASE}_list.do?sysparm_limit=50&sysparm_query=ORDERBYnumber")
                         .get_data(as_text=True))
    assert page.count('name="sys_id" value="') == 50
    assert '<option value="50" selected>' in page and f"of {(total + 49) // 50}</label>" in page
    assert "sysparm_limit=50" in re.search(r'href="([^"]+)"[^>]*rel="next"', page).group(1)  # the next page too
    second = html.unescape(client.get(f"/{CASE}_list.do?sysparm_limit=20&page=2&sysparm_query=ORDERBYnumber")
                           .get_data(as_text=True))
    assert f"21–40 of <strong class=\"total\">{total}</strong>" in second


def test_the_activity_stream_shows_the_emails_sent_about_the_record(client):
    agent = {"headers": basic("agent")}
    parent = client.post(CASES, json={"short_description": "Outage", "major_case_state": "proposed"}, **agent).json
    contact = client.get("/api/now/table/customer_contact?sysparm_query=emailISNOTEMPTY&sysparm_limit=1",
                         **agent).json["result"][0]
    child = client.post(CASES, json={"short_description": "Outage for you", "parent": parent["result"]["sys_id"],
                                     "contact": contact["sys_id"]}, **agent).json["result"]
    ui_sign_in(client, "agent")
    page = html.unescape(client.get(f"/{CASE}.do?sys_id={child['sys_id']}").get_data(as_text=True))
    entry = re.search(r'<li class="entry email">(.*?)</li>', page, re.S).group(1)
    assert "E-mail · Ready" in entry and f"to {contact['email']}" in entry and child["number"] in entry


def test_a_related_list_pages_without_javascript_on_the_records_own_page(client):
    account = client.get("/api/now/table/customer_account?sysparm_limit=1", headers=basic("admin")).json["result"][0]
    ui_sign_in(client, "agent")
    fragment = client.get(f"/ui/related/customer_account/{account['sys_id']}/1?first=11", headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and "<html" not in fragment.get_data(as_text=True)
    plain = client.get(f"/ui/related/customer_account/{account['sys_id']}/1?first=11")  # a link, no JavaScript
    assert plain.status_code == 302
    assert plain.headers["Location"].endswith(f"/customer_account.do?sys_id={account['sys_id']}&related1_first=11"
                                              "#related-1")
    page = client.get(plain.headers["Location"]).get_data(as_text=True)
    assert "<html" in page and 'id="related-1"' in page


@pytest.mark.parametrize("path, title, advice", [
    ("/ui/properties", "You may not open this page", "Your roles do not give access to it."),
    ("/no_such_table_list.do", "Not found", "The page or record does not exist, or it was deleted."),
])
def test_an_error_page_says_it_in_our_words_not_the_servers(client, path, title, advice):
    """The page's title and advice, never werkzeug's stock sentence ("read-protected or not readable
    by the server", "not found on the server")."""
    ui_sign_in(client, "agent")
    r = client.get(path)
    page = html.unescape(r.get_data(as_text=True))
    assert r.status_code in (403, 404) and title in page and advice in page
    assert "server" not in page.split("<main", 1)[-1].split("</main>", 1)[0], page


@pytest.mark.parametrize("user, page", [("agent", f"/{CASE}_list.do"), ("customer", "/csm")])
def test_every_page_says_its_times_are_utc(client, user, page):
    """Dates and times are shown in UTC; the page's header says so, for staff and customers alike."""
    ui_sign_in(client, user)
    shown = client.get(page)
    assert shown.status_code == 200, shown.status_code
    header = shown.get_data(as_text=True).split("</header>")[0]
    assert re.search(r'<abbr class="zone" title="Every date and time on these pages is in UTC[^"]*">Times in UTC</abbr>',
                     header)


@pytest.mark.parametrize("user, path, shown", [
    ("manager", "/", "Morgan Manager"),
    ("agent", f"/{CASE}_list.do", "Alex Agent"),
    ("customer", "/csm", "Jordan Lee 1"),
])
def test_the_header_names_the_person_signed_in_with_their_user_name_on_hover(client, user, path, shown):
    """Pages greet a user by their name (sys_user.name), as ServiceNow's header does, not by their login;
    the login is on hover. A user without a name is shown by their login."""
    ui_sign_in(client, user)
    page = client.get(path).get_data(as_text=True)
    assert f'title="User name: {user}">{shown}</' in page
    users = client.get(f"/api/now/table/sys_user?sysparm_query=user_name={user}&sysparm_fields=sys_id",
                       headers=basic("admin")).json["result"]
    assert client.patch(f"/api/now/table/sys_user/{users[0]['sys_id']}", json={"name": ""},
                        headers=basic("admin")).status_code == 200
    assert f'title="User name: {user}">{user}</' in client.get(path).get_data(as_text=True)
