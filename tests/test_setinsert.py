"""Set-based inserts (one INSERT ... SELECT) write exactly what the row-by-row path writes.

Child cases from a recipients list and the members of a condition list go through
`RecordService.insert_select` when nothing around the insert needs each row in Python. These
tests build the same children both ways and compare every value a user can see: the case's
fields, its number, its journal entries and the e-mail to its contact. They also check that a
rule that does read the varying field sends the rows one by one, with the same outcome."""

from __future__ import annotations

import re

import pytest

from caseloom import setinsert
from caseloom.access import SYSTEM
from caseloom.actions import run_action
from caseloom.jobs.registry import execute_job
from caseloom.memberlists import lists_for
from caseloom.query import parse_encoded

CASE = "sn_customerservice_case"
SKIP = {"sys_id", "sys_created_on", "sys_updated_on", "parent", "number", "opened_at"}


def make_children(runtime, tag: str) -> tuple[str, list[dict], list[dict], list[dict]]:
    """A list of 30 accounts (a third without a primary contact), a major case, its children."""
    with runtime.transaction() as service:
        contacts = [service.insert("customer_contact", {"name": f"{tag} contact {i}", "email": f"{tag}{i}@example.com"})
                    for i in range(20)]
        service.insert_many("customer_account", (
            {"name": f"{tag} account {i}", "country": "XQ" if tag == "a" else "XR",
             **({"primary_contact": contacts[i]["sys_id"]} if i < 20 else {})} for i in range(30)))
        list_id = service.insert("sn_publications_recipients_list", {
            "name": f"{tag} list", "type": "accounts", "conditions": f"country={'XQ' if tag == 'a' else 'XR'}"})["sys_id"]
        report = lists_for(service, "sn_publications_recipients_list").refresh(list_id)
        assert (report.identified, report.added) == (30, 30)
        with service.by_definitions():  # an accepted major case, as accepting makes it
            major = service.insert(CASE, {"short_description": "Storage <outage> & 'quotes'", "state": 10, "priority": 1,
                                          "major_case_state": "accepted", "recipient_list": list_id})
        outcome = run_action(service, CASE, major["sys_id"], "create_child_cases", {"comments": "We are on it.\nMore soon."})
    job = execute_job(runtime, outcome.job)
    assert (job.state, job.done) == ("done", 30)
    with runtime.transaction(SYSTEM) as service:
        children = service.query(CASE, parse_encoded(f"parent={major['sys_id']}^ORDERBYnumber"))
        journal = [service.journal(CASE, c["sys_id"]) for c in children]
        emails = service.query("sys_email", parse_encoded("instanceIN" + ",".join(c["sys_id"] for c in children)))
    return major["sys_id"], children, journal, emails


def comparable(children, journal, emails):
    """What a user sees of the children, with what differs by construction (ids, numbers, the
    tag in names and addresses) taken out."""
    by_id = {c["sys_id"]: c for c in children}
    cases = [{k: v for k, v in c.items() if k not in SKIP | {"account", "contact"}} for c in children]
    entries = [[(e["element"], e["value"], e["name"], e["sys_created_by"]) for e in j] for j in journal]
    mail = sorted((re.sub(r"^[ab]", "<tag>", e["recipients"]),
                   e["subject"].replace(by_id[e["instance"]]["number"], "<number>"),
                   e["body"].replace(by_id[e["instance"]]["number"], "<number>"), e["state"], e["target_table"])
                  for e in emails)
    return cases, entries, mail


def test_children_written_set_based_equal_children_written_row_by_row(runtime, monkeypatch):
    calls = []
    real = setinsert.insert_select

    def spy(service, table, *args, **kwargs):
        calls.append((table, real(service, table, *args, **kwargs)))
        return calls[-1][1]

    monkeypatch.setattr(setinsert, "insert_select", spy)
    _, set_children, set_journal, set_emails = make_children(runtime, "a")
    assert [table for table, result in calls if result is not None] == [
        "sn_publications_recipientslist_account_m2m", CASE]  # the set-based path wrote the members and children

    runtime.set_based = False  # the same work, row by row
    calls.clear()
    _, row_children, row_journal, row_emails = make_children(runtime, "b")
    assert [table for table, result in calls if result is not None] == []

    assert len(set_children) == len(row_children) == 30
    for children in (set_children, row_children):  # numbers follow on, in the members' order
        numbers = [int(re.fullmatch(r"CS(\d{7})", c["number"]).group(1)) for c in children]
        assert numbers == list(range(numbers[0], numbers[0] + 30))
        assert len({c["sys_id"] for c in children}) == 30 and all(re.fullmatch(r"[0-9a-f]{32}", c["sys_id"])
                                                                    for c in children)
    set_cases, set_entries, set_mail = comparable(set_children, set_journal, set_emails)
    row_cases, row_entries, row_mail = comparable(row_children, row_journal, row_emails)
    assert set_cases == row_cases
    assert sum(1 for c in set_children if c["contact"]) == sum(1 for c in row_children if c["contact"]) == 20
    for children in (set_children, row_children):  # each child's contact is its account's primary contact
        with runtime.transaction(SYSTEM) as service:
            for child in children:
                account = service.get("customer_account", child["account"])
                assert child["contact"] == account["primary_contact"]
    assert set_entries == row_entries and set_entries[0] == [("comments", "We are on it.\nMore soon.", CASE, "system")]
    assert set_mail == row_mail and len(set_mail) == 20  # one e-mail per child whose contact has an address
    assert set_mail[0][1] == "We are working on an issue that affects you: <number>"
    assert set_mail[0][2].startswith("We have opened case <number> for you: Storage <outage> & 'quotes'.")


def test_a_second_run_adds_no_second_child(runtime):
    major_id, children, _, _ = make_children(runtime, "a")
    with runtime.transaction() as service:
        outcome = run_action(service, CASE, major_id, "create_child_cases", {"comments": "again"})
    assert execute_job(runtime, outcome.job).state == "done"
    with runtime.transaction(SYSTEM) as service:
        assert service.count(CASE, parse_encoded(f"parent={major_id}")) == len(children) == 30


def major_of_thirty(service, tag: str, country: str) -> tuple[str, list[str]]:
    """An accepted major case whose recipients list holds 30 new accounts of `country`: the major
    case's sys_id and the accounts' sys_ids, sorted (the order of the job's batches)."""
    service.insert_many("customer_account", ({"name": f"{tag} account {i}", "country": country} for i in range(30)))
    list_id = service.insert("sn_publications_recipients_list", {
        "name": f"{tag} list", "type": "accounts", "conditions": f"country={country}"})["sys_id"]
    lists_for(service, "sn_publications_recipients_list").refresh(list_id)
    with service.by_definitions():
        major = service.insert(CASE, {"short_description": "Outage", "state": 10,
                                      "major_case_state": "accepted", "recipient_list": list_id})["sys_id"]
    accounts = sorted(a["sys_id"] for a in service.query("customer_account", parse_encoded(f"country={country}"),
                                                          ["sys_id"]))
    return major, accounts


def run_seeing(runtime, job_id: str, keep) -> tuple[object, list[str]]:
    """Run the job `job_id`: its end state, and the SQL statements it sent for which keep(statement) holds."""
    import sqlalchemy as sa

    seen = []

    def spy(conn, cursor, statement, parameters, context, executemany):
        if keep(statement):
            seen.append(statement)

    sa.event.listen(runtime.engine, "before_cursor_execute", spy)
    try:
        return execute_job(runtime, job_id), seen
    finally:
        sa.event.remove(runtime.engine, "before_cursor_execute", spy)


@pytest.mark.parametrize("by_value, looks", [
    (None, "NOT IN ("),  # the range's children are read first, then left out by value
    (0, "EXISTS"),  # more than MADE_BY_VALUE of them: looked for in the statement
])
def test_a_batch_looks_for_existing_children_only_where_its_range_has_some(runtime, monkeypatch, by_value, looks):
    """Each batch's INSERT ... SELECT leaves out the members that have a child already only where
    its range has children (a resumed job, children added by hand), and then by value, read before
    the statement: no statement reads the children's index while it inserts into it (on stale
    statistics, a loop over the members reading the range's children grew with the square of the
    batch). Either way each member ends with exactly one child."""
    from caseloom.effects import lists

    monkeypatch.setattr(lists, "SET_BATCH", 10)  # 30 members: three batches
    if by_value is not None:
        monkeypatch.setattr(lists, "MADE_BY_VALUE", by_value)
    with runtime.transaction() as service:
        major, accounts = major_of_thirty(service, "c", "XT")
        for account in (accounts[0], accounts[-1]):  # reported already: one in the first batch, one in the last
            service.insert(CASE, {"short_description": "Reported", "parent": major, "account": account})
        outcome = run_action(service, CASE, major, "create_child_cases", {"comments": "hello"})
    cases = runtime.storage.physical(CASE).name
    job, inserts = run_seeing(runtime, outcome.job,
                              lambda statement: statement.startswith(f"INSERT INTO {cases} (") and " SELECT " in statement)
    assert (job.state, job.done) == ("done", 28)
    assert [[word for word in ("NOT IN (", "EXISTS") if word in statement] for statement in inserts] == [
        [looks], [], [looks]]
    with runtime.transaction(SYSTEM) as service:
        children = service.query(CASE, parse_encoded(f"parent={major}"), ["account"])
    assert sorted(c["account"] for c in children) == accounts


def test_a_batch_counts_its_members_alone_and_a_member_whose_record_is_gone_leaves_a_gap(runtime, monkeypatch):
    """The numbers of a batch are reserved for its members counted from the members' table alone
    (an index range), not from the join with their records that the INSERT reads values through:
    that count hashed every account of a million, twice a batch. A member whose record is gone
    (removed outside the platform) is counted but gets no child: its number is left unused, and
    every number stays unique."""
    import sqlalchemy as sa

    from caseloom.effects import lists

    monkeypatch.setattr(lists, "SET_BATCH", 10)  # 30 members: three batches
    with runtime.transaction() as service:
        major, accounts = major_of_thirty(service, "g", "XG")
        gone = accounts[14]  # in the second batch
        table = runtime.storage.physical("customer_account")
        service.conn.execute(sa.delete(table).where(table.c.sys_id == gone))
        outcome = run_action(service, CASE, major, "create_child_cases", {"comments": "hello"})
    accounts_table = runtime.storage.physical("customer_account").name
    job, counts = run_seeing(runtime, outcome.job, lambda statement: statement.startswith("SELECT count(*)"))
    assert (job.state, job.message) == ("done", "29 child records created")
    members_table = runtime.storage.physical("sn_publications_recipientslist_account_m2m").name
    batch_counts = [s for s in counts if members_table in s and "EXISTS" not in s]  # not the job's first count
    assert len(batch_counts) == 3 and not [s for s in batch_counts if accounts_table in s]
    with runtime.transaction(SYSTEM) as service:
        children = service.query(CASE, parse_encoded(f"parent={major}"), ["account", "number"])
        with service.by_definitions():
            after = service.insert(CASE, {"short_description": "Next"})["number"]
    assert sorted(c["account"] for c in children) == [a for a in accounts if a != gone]
    numbers = sorted(int(c["number"][2:]) for c in children)
    assert len(set(numbers)) == 29
    assert numbers[-1] - numbers[0] == 29  # 30 numbers reserved, the gone member's unused
    assert int(after[2:]) > numbers[-1]


def run_children(config, definitions_copy, country: str = "XS", set_based: bool = True
                 ) -> tuple[object, list[dict], list[dict]]:
    """create_child_cases over 10 new accounts of `country` (6 with a primary contact) with the
    definitions in `definitions_copy`: the job, the children, and the e-mails about them."""
    from dataclasses import replace

    from caseloom.definitions import load_folder
    from caseloom.runtime import Runtime

    runtime = Runtime(replace(config, definitions=str(definitions_copy)), load_folder(definitions_copy))
    runtime.set_based = set_based
    try:
        with runtime.transaction() as service:
            contacts = [service.insert("customer_contact", {"name": f"r contact {i}", "email": f"r{i}@example.com"})
                        for i in range(6)]
            service.insert_many("customer_account", (
                {"name": f"r account {i}", "country": country, **({"primary_contact": contacts[i]["sys_id"]} if i < 6 else {})}
                for i in range(10)))
            list_id = service.insert("sn_publications_recipients_list", {
                "name": "r list", "type": "accounts", "conditions": f"country={country}"})["sys_id"]
            lists_for(service, "sn_publications_recipients_list").refresh(list_id)
            with service.by_definitions():  # an accepted major case, as accepting makes it
                major = service.insert(CASE, {"short_description": "Refused", "state": 10,
                                              "major_case_state": "accepted", "recipient_list": list_id})
            outcome = run_action(service, CASE, major["sys_id"], "create_child_cases", {"comments": "hello"})
        job = execute_job(runtime, outcome.job)
        with runtime.transaction(SYSTEM) as service:
            children = service.query(CASE, parse_encoded(f"parent={major['sys_id']}"))
            emails = service.query("sys_email", parse_encoded("instanceIN" + ",".join(c["sys_id"] for c in children))) \
                if children else []
        return job, children, emails
    finally:
        runtime.engine.dispose()


def children_with_rule(config, definitions_copy, rule_condition: str) -> tuple[object, int]:
    """Run create_child_cases with an extra before-insert rule on cases that refuses when it holds."""
    (definitions_copy / "rules" / "refuse_child.yaml").write_text(
        "rules:\n"
        "  - name: refuse_child\n"
        f"    table: {CASE}\n"
        "    when: before\n"
        "    on: [insert]\n"
        f"    condition: {rule_condition}\n"
        "    effects:\n"
        "      - refuse: {field: account, message: this account takes no child cases}\n")
    job, children, _ = run_children(config, definitions_copy)
    return job, len(children)


@pytest.mark.parametrize("condition, per_row", [
    ("{field: account.name, op: eq, value: r account 7}", True),  # reads the member: row by row
    ("{field: parent, op: notempty}", False),  # the same for every child: checked once
])
def test_a_refusing_rule_stops_the_job_and_writes_no_child(config, definitions_copy, monkeypatch, condition, per_row):
    calls = []
    real = setinsert.insert_select


    def spy(service, table, *args, **kwargs):
        try:
            result = real(service, table, *args, **kwargs)
        except Exception:
            calls.append((table, "refused"))
            raise
        calls.append((table, result if result is not None else service.row_by_row[table]))  # declined: why
        return result

    monkeypatch.setattr(setinsert, "insert_select", spy)
    job, children = children_with_rule(config, definitions_copy, condition)
    assert job.state == "failed" and "this account takes no child cases" in job.message
    assert children == 0
    # row by row: the set-based path declined; else it ran the rule once and refused
    declined = "before-insert rule 'refuse_child' reads account, which differ by row"
    assert [result for table, result in calls if table == CASE] == [declined if per_row else "refused"]


def spy_on_cases(monkeypatch) -> list:
    """What each set-based insert of cases returned, or why it declined (the rows went one by one)."""
    calls: list = []
    real = setinsert.insert_select

    def spy(service, table, *args, **kwargs):
        result = real(service, table, *args, **kwargs)
        if table == CASE:
            calls.append(result if result is not None else service.row_by_row[table])  # declined: its reason
        return result

    monkeypatch.setattr(setinsert, "insert_select", spy)
    return calls


def test_a_notification_on_the_number_sends_each_child_its_mail_row_by_row(config, definitions_copy, monkeypatch):
    """The number is given when the row is written: a notification whose condition reads it
    cannot be decided once for the slice, so the rows go one by one and every mail is sent."""
    (definitions_copy / "notifications" / "numbered.yaml").write_text(
        "notifications:\n"
        "  numbered_child:\n"
        f"    table: {CASE}\n"
        "    on: [insert]\n"
        "    condition: {field: number, op: startswith, value: CS}\n"
        "    recipients: {fields: [contact]}\n"
        "    subject: 'Numbered {{ record.number }}'\n"
        "    body: 'Case {{ record.number }}'\n")
    calls = spy_on_cases(monkeypatch)
    job, children, emails = run_children(config, definitions_copy)
    assert job.state == "done" and len(children) == 10
    assert calls == ["notification 'numbered_child': its condition reads number, which differ by row"]
    numbered = sorted(e["subject"] for e in emails if e["subject"].startswith("Numbered"))
    assert numbered == sorted(f"Numbered {c['number']}" for c in children if c["contact"])
    assert len(numbered) == 6 and len(emails) == 12  # and the application's own child_case_created mail


MANAGER = "sn_majorissue_mgt.major_issue_manager"
MANAGERS = ["a.manager@example.com", "manager@example.com", "mim@example.com", "z.manager@example.com"]
WITH_MANAGERS = ",".join([*MANAGERS[:3], "r{i}@example.com", MANAGERS[3]])  # a contact's address among them


@pytest.mark.parametrize("recipients, with_contact, without", [
    # the child's contact is its account's primary contact: the same address by two paths, once
    ("{fields: [contact, account.primary_contact]}", "r{i}@example.com", None),
    # an address and the role's users (the two the test adds, and the application's own): merged in order, each once
    (f"{{fields: [contact], roles: [{MANAGER}]}}", WITH_MANAGERS, ",".join(MANAGERS)),
    (f"{{fields: [account.primary_contact, contact, assigned_to], roles: [{MANAGER}]}}", WITH_MANAGERS,
     ",".join(MANAGERS)),
], ids=["one person by two paths", "a path and a role", "three paths and a role"])
def test_a_notification_to_several_addresses_is_written_set_based_as_row_by_row(
        config, definitions, definitions_copy, monkeypatch, recipients, with_contact, without):
    """Several recipient paths, or paths and roles: one e-mail per child with an address, to each
    address once, in order, written by the set-based insert as the rows one by one write it."""
    from caseloom.runtime import Runtime
    from caseloom.users import add_user

    (definitions_copy / "notifications" / "several.yaml").write_text(
        "notifications:\n"
        "  several:\n"
        f"    table: {CASE}\n"
        "    on: [insert]\n"
        "    condition: {field: parent, op: notempty}\n"
        f"    recipients: {recipients}\n"
        "    subject: 'About {{ record.short_description }}'\n"
        "    body: 'Case {{ record.number }} for you'\n")
    runtime = Runtime(config, definitions)
    with runtime.transaction() as service:  # the role's users, whose addresses sort around the contacts'
        for name in ("z.manager", "a.manager"):
            add_user(service, name, None, [MANAGER], {"email": f"{name}@example.com"})
    runtime.engine.dispose()
    calls = []
    real = setinsert.insert_select

    def spy(service, table, *args, **kwargs):
        result = real(service, table, *args, **kwargs)
        if table == CASE:
            calls.append(result is not None)
        return result

    monkeypatch.setattr(setinsert, "insert_select", spy)
    sent = {}
    for set_based, country in ((True, "XS"), (False, "XT")):
        job, children, emails = run_children(config, definitions_copy, country, set_based)
        assert job.state == "done" and len(children) == 10
        number = {c["sys_id"]: c["number"] for c in children}
        sent[set_based] = sorted((e["recipients"], e["body"].replace(number[e["instance"]], "<number>"))
                                 for e in emails if e["notification"] == "several")
    assert calls == [True, False]  # the first run inserted its children in one statement; the second, one by one
    expected = [with_contact.format(i=i) for i in range(6)] + ([without] * 4 if without else [])
    assert sent[True] == sent[False] == sorted((r, "Case <number> for you") for r in expected)


@pytest.mark.parametrize("set_based", [True, False], ids=["set-based", "row by row"])
def test_an_empty_value_in_a_notification_is_shown_as_nothing(config, definitions_copy, set_based):
    """A field never set (the children's consumer) and a dot-walk through an empty reference (their
    assigned_to) are shown as nothing, never as the word None: written in SQL for the set-based
    children, rendered in Python row by row."""
    (definitions_copy / "notifications" / "empty.yaml").write_text(
        "notifications:\n"
        "  empty_values:\n"
        f"    table: {CASE}\n"
        "    on: [insert]\n"
        "    recipients: {fields: [contact]}\n"
        "    subject: 'For [{{ record.consumer }}]'\n"
        "    body: 'Assigned to [{{ record.assigned_to.name }}]'\n")
    job, children, emails = run_children(config, definitions_copy, set_based=set_based)
    assert job.state == "done" and not any(c["consumer"] or c["assigned_to"] for c in children)
    mine = [e for e in emails if e["subject"].startswith("For [")]
    assert len(mine) == 6
    assert {(e["subject"], e["body"]) for e in mine} == {("For []", "Assigned to []")}
