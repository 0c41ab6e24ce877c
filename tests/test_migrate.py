"""Schema migration from changed definitions: additive changes apply, data loss is refused."""

import datetime as dt
import re
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from caseloom.cli import main
from caseloom.definitions import load_folder, load_sources
from caseloom.migrate import DataLossRefused, migrate, plan, planned_indexes
from caseloom.query import Query, parse_encoded
from caseloom.runtime import Runtime

DEFINITIONS = Path(__file__).resolve().parent.parent / "definitions"

NOTE_TABLE = """\
table: u_note
label: Note
display: title
fields:
  title: {type: string, max_length: 80, mandatory: true}
  account: {type: reference, to: customer_account}
  body: {type: text}
list: [title, account]
"""


def shipped() -> dict[str, str]:
    return {str(p.relative_to(DEFINITIONS)): p.read_text()
            for p in sorted(DEFINITIONS.rglob("*")) if p.suffix in (".yaml", ".csv")}


def edit(text: str, *replacements: tuple[str, str]) -> str:
    for old, new in replacements:
        assert old in text, f"{old!r} is not in the shipped definition"
        text = text.replace(old, new)
    return text


def changed(files: dict[str, str]) -> list[tuple[str, str]]:
    """The shipped definitions with some files replaced or added, as (relative path, text) pairs."""
    return sorted((shipped() | files).items())


def with_note_table() -> list[tuple[str, str]]:
    return changed({"tables/u_note.yaml": NOTE_TABLE})


def without_city() -> list[tuple[str, str]]:
    """customer_account without its `city` field (form and demo generator too), plus a new field `tier`."""
    files = shipped()
    account = edit(files["tables/customer_account.yaml"],
                   ("  city: {type: string, max_length: 60}\n", "  tier: {type: string, max_length: 20}\n"),
                   ("phone, city, country", "phone, country"))
    demo = edit(files["demo/csm.yaml"],
                ("        city: {cycle: [Berlin, Paris, Boston, London, Utrecht, Madrid, Milan, Osaka, Munich, Denver]}\n", ""))
    return changed({"tables/customer_account.yaml": account, "demo/csm.yaml": demo})


def short_description(length: int) -> list[tuple[str, str]]:
    """task and case with short_description of another max_length (both share the task table's column)."""
    files = shipped()
    old = "short_description: {type: string, max_length: 160"
    new = f"short_description: {{type: string, max_length: {length}"
    sources = changed({name: edit(files[name], (old, new))
                       for name in ("tables/task.yaml", "tables/sn_customerservice_case.yaml")})
    # the demo data's descriptions would not fit a narrower field, and validate says so: the migration is the subject
    return [(path, text) for path, text in sources if not path.startswith("demo/")] if length < 160 else sources


@pytest.fixture
def runtime_for(config):
    """Build a Runtime for a changed definition set on the test's database."""
    made = []

    def build(sources: list[tuple[str, str]]) -> Runtime:
        rt = Runtime(config, load_sources(sources))
        made.append(rt)
        return rt

    yield build
    for rt in made:
        rt.engine.dispose()


def columns(engine: sa.Engine, table: str) -> dict[str, sa.types.TypeEngine]:
    return {c["name"]: c["type"] for c in sa.inspect(engine).get_columns(table)}


def indexes(engine: sa.Engine, table: str) -> set[str]:
    return {ix["name"] for ix in sa.inspect(engine).get_indexes(table)}


def scalar(engine: sa.Engine, sql: str, **params):
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


def planned(rt: Runtime) -> list[str]:
    with rt.engine.connect() as conn:
        return [step.description for step in plan(conn, rt.storage)]


# -- additive changes -----------------------------------------------------------------------


def test_initialised_database_matches_the_shipped_definitions(runtime):
    assert planned(runtime) == []
    assert migrate(runtime.engine, runtime.storage) == []


def test_new_table_field_and_index_keep_existing_rows(runtime, runtime_for):
    with runtime.transaction() as service:
        before = service.insert("customer_account", {"name": "Before Migration Ltd", "city": "Lyon", "country": "FR"})
    accounts = scalar(runtime.engine, "SELECT COUNT(*) FROM customer_account")
    files = shipped()
    account = edit(files["tables/customer_account.yaml"],
                   ("  city: {type: string, max_length: 60}\n",
                    "  city: {type: string, max_length: 60, index: true}\n  tier: {type: string, max_length: 20}\n"))
    new = runtime_for(changed({"tables/customer_account.yaml": account, "tables/u_note.yaml": NOTE_TABLE}))

    done = migrate(new.engine, new.storage)

    assert "create table u_note" in done
    assert "add field customer_account.tier" in done
    assert "create index ixn_customer_account_city on customer_account" in done
    assert not [step for step in done if step.startswith(("drop", "change"))], done
    assert "tier" in columns(new.engine, "customer_account")
    assert "ixn_customer_account_city" in indexes(new.engine, "customer_account")
    assert sa.inspect(new.engine).has_table("u_note")
    assert scalar(new.engine, "SELECT COUNT(*) FROM customer_account") == accounts
    with new.transaction() as service:
        kept = service.get("customer_account", before["sys_id"])
        assert (kept["name"], kept["city"], kept["country"], kept["number"]) == (
            "Before Migration Ltd", "Lyon", "FR", before["number"])
        assert kept["tier"] is None
        service.update("customer_account", before["sys_id"], {"tier": "gold"})
        note = service.insert("u_note", {"title": "Renewal due", "account": before["sys_id"]})
    with new.transaction() as service:
        assert service.get("customer_account", before["sys_id"])["tier"] == "gold"
        assert service.get("u_note", note["sys_id"])["account"] == before["sys_id"]
    assert planned(new) == []


@pytest.mark.parametrize("declared, existing", [("{type: boolean}", False), ("{type: boolean, default: true}", True)])
def test_a_new_boolean_field_is_false_or_its_default_on_the_rows_a_table_already_has(runtime, runtime_for,
                                                                                   declared, existing):
    """A boolean is never empty: the records a table has when one is added hold its default (false when
    it declares none), so `key_account=false` finds them; the migration is then complete."""
    with runtime.transaction() as service:
        before = service.insert("customer_account", {"name": "Before Migration Ltd"})["sys_id"]
    account = edit(shipped()["tables/customer_account.yaml"],
                   ("  city: {type: string, max_length: 60}\n",
                    f"  city: {{type: string, max_length: 60}}\n  key_account: {declared}\n"))
    new = runtime_for(changed({"tables/customer_account.yaml": account}))
    assert "add field customer_account.key_account" in migrate(new.engine, new.storage)
    with new.transaction() as service:
        assert service.get("customer_account", before)["key_account"] is existing
        assert service.count("customer_account", parse_encoded(f"key_account={str(existing).lower()}")) == \
            service.count("customer_account", Query())
        made = service.insert("customer_account", {"name": "After Migration Ltd"})["sys_id"]
        assert service.get("customer_account", made)["key_account"] is existing
    assert planned(new) == []


def test_an_index_that_could_not_be_built_is_a_line_of_inits_report(runtime, runtime_for, table_held, monkeypatch):
    """PostgreSQL: a new index of a table with rows is built after the migration commits; one the table's
    writers keep from being built is named in `caseloom init`'s report, not counted as a change, and the
    next migration builds it."""
    from caseloom import indexbuild
    from caseloom.bootstrap import InitReport

    account = edit(shipped()["tables/customer_account.yaml"],
                   ("  city: {type: string, max_length: 60}\n", "  city: {type: string, max_length: 60, index: true}\n"))
    new = runtime_for(changed({"tables/customer_account.yaml": account}))
    monkeypatch.setattr(indexbuild, "BUILD_LOCK_WAIT_MS", 200)
    table_held.write("customer_account")
    try:
        report = InitReport()
        report.migrated = migrate(new.engine, new.storage, not_built=report.not_built)
    finally:
        table_held.release()
    assert report.lines()[:3] == [
        "schema: 1 change(s)", "  create index ixn_customer_account_city on customer_account",
        "  not built yet: the index ixn_customer_account_city of customer_account was not built (canceling statement "
        "due to lock timeout); the change itself is made, and queries run without the index: the next change of "
        "definitions or `caseloom init` builds it"]
    assert table_held.index("ixn_customer_account_city") == "invalid"  # its writer still held the table
    assert planned(new) == ["create index ixn_customer_account_city on customer_account"]
    assert migrate(new.engine, new.storage) == ["create index ixn_customer_account_city on customer_account"]
    assert table_held.index("ixn_customer_account_city") == "valid"
    assert planned(new) == []


CASE = "tables/sn_customerservice_case.yaml"
TEXT_INDEX = "text_index: [short_description, description]\n"


def case_edited(*replacements: tuple[str, str]) -> list[tuple[str, str]]:
    return changed({CASE: edit(shipped()[CASE], *replacements)})


@pytest.mark.parametrize("sources", [
    lambda: case_edited((TEXT_INDEX, TEXT_INDEX + "contains_index: [short_description]\n")),
    lambda: case_edited((TEXT_INDEX, "text_index: [short_description]\n")),
    lambda: case_edited(("similar_suggestion: {type: string, max_length: 300,",
                         "similar_suggestion: {type: string, max_length: 400,")),
    lambda: short_description(200),
    lambda: with_note_table(),
], ids=["a contains index added", "the text index's fields changed", "a field the text index does not read widened",
        "a field the text index reads widened", "a new table"])
def test_the_dry_run_says_what_the_migration_then_does(runtime, runtime_for, sources):
    """What a change's review lists (its steps, then what follows for the text and contains indexes) is
    what applying it does, on either database."""
    new = runtime_for(sources())
    with new.engine.connect() as conn:
        steps = plan(conn, new.storage)
        said = [step.description for step in steps] + planned_indexes(conn, new.storage, steps)
    assert migrate(new.engine, new.storage) == said
    assert planned(new) == []


def test_index_false_drops_the_automatic_index_of_a_choice_and_keeps_its_values(runtime, runtime_for):
    assert "ixn_customer_account_industry" in indexes(runtime.engine, "customer_account"), "choices are indexed"
    industries = scalar(runtime.engine, "SELECT COUNT(*) FROM customer_account WHERE industry IS NOT NULL")
    account = edit(shipped()["tables/customer_account.yaml"],
                   ("  industry: {type: choice, ", "  industry: {type: choice, index: false, "))
    new = runtime_for(changed({"tables/customer_account.yaml": account}))

    done = migrate(new.engine, new.storage)

    assert done == ["drop index ixn_customer_account_industry on customer_account"]
    assert "ixn_customer_account_industry" not in indexes(new.engine, "customer_account")
    assert scalar(new.engine, "SELECT COUNT(*) FROM customer_account WHERE industry IS NOT NULL") == industries
    assert planned(new) == []


def test_a_mandatory_fields_index_holds_every_row(runtime, runtime_for):
    """An indexed field made mandatory has no empty rows to leave out of its index: the index then holds every
    row (`ix_`), so a list sorted by the field reads its page along it; optional again, it is partial (`ixn_`)."""
    assert "ixn_customer_account_country" in indexes(runtime.engine, "customer_account")
    account = edit(shipped()["tables/customer_account.yaml"],
                   ("  country: {type: string, max_length: 40, index: true}",
                    "  country: {type: string, max_length: 40, index: true, mandatory: true}"))
    new = runtime_for(changed({"tables/customer_account.yaml": account}))

    done = migrate(new.engine, new.storage)

    assert done == ["drop index ixn_customer_account_country on customer_account",
                    "create index ix_customer_account_country on customer_account"]
    assert planned(new) == []
    back = runtime_for(changed({}))
    assert migrate(back.engine, back.storage) == ["drop index ix_customer_account_country on customer_account",
                                                  "create index ixn_customer_account_country on customer_account"]


def test_an_index_led_by_the_class_stands_for_the_class_index(runtime, runtime_for):
    """A declared index that starts with sys_class_name replaces the class index of a shared table, on
    an existing database too; taking it out brings the class index back."""
    led = {"ix_task_sys_class_name_active_state_priority_assigned_to", "ix_task_sys_class_name_opened_at"}
    assert led <= indexes(runtime.engine, "task")
    assert "ix_task_sys_class_name" not in indexes(runtime.engine, "task")
    case = edit(shipped()["tables/sn_customerservice_case.yaml"],
                ("  - [sys_class_name, active, state, priority, assigned_to]\n", ""),
                ("  - [sys_class_name, opened_at]\n", ""))
    new = runtime_for(changed({"tables/sn_customerservice_case.yaml": case}))

    done = migrate(new.engine, new.storage)

    assert sorted(done) == ["create index ix_task_sys_class_name on task", *sorted(f"drop index {i} on task" for i in led)]
    assert planned(new) == []


def test_dropping_an_empty_table_needs_no_force(runtime, runtime_for):
    with_note = runtime_for(with_note_table())
    migrate(with_note.engine, with_note.storage)
    done = migrate(runtime.engine, runtime.storage)
    assert [step for step in done if not step.endswith(" on u_note")] == ["drop table u_note"], done
    assert not sa.inspect(runtime.engine).has_table("u_note")


# -- changes that would lose data -----------------------------------------------------------


def test_dropping_a_field_with_data_is_refused_until_forced(runtime, runtime_for):
    values = scalar(runtime.engine, "SELECT COUNT(*) FROM customer_account WHERE city IS NOT NULL")
    assert values > 0, "the demo accounts have cities"
    accounts = scalar(runtime.engine, "SELECT COUNT(*) FROM customer_account")
    new = runtime_for(without_city())

    with pytest.raises(DataLossRefused) as refused:
        migrate(new.engine, new.storage)

    assert refused.value.losses == [f"field customer_account.city and its {values} values"]
    assert f"customer_account.city and its {values} values" in str(refused.value)
    assert "--force" in str(refused.value)
    after_refusal = columns(new.engine, "customer_account")
    assert "city" in after_refusal and "tier" not in after_refusal, "nothing changed, not even the new field"
    assert scalar(new.engine, "SELECT COUNT(*) FROM customer_account WHERE city IS NOT NULL") == values

    done = migrate(new.engine, new.storage, force=True)

    assert "drop field customer_account.city" in done and "add field customer_account.tier" in done
    after = columns(new.engine, "customer_account")
    assert "city" not in after and "tier" in after
    assert scalar(new.engine, "SELECT COUNT(*) FROM customer_account") == accounts
    assert scalar(new.engine, "SELECT COUNT(*) FROM customer_account WHERE name IS NULL OR number IS NULL") == 0
    assert {"ix_customer_account_name", "ixn_customer_account_country"} <= indexes(new.engine, "customer_account")
    assert planned(new) == []


def test_dropping_an_empty_field_is_applied(runtime, runtime_for):
    with runtime.engine.begin() as conn:
        conn.execute(sa.text("UPDATE customer_account SET city = NULL"))
    new = runtime_for(without_city())
    done = migrate(new.engine, new.storage)
    assert "drop field customer_account.city" in done
    assert "city" not in columns(new.engine, "customer_account")


def test_narrowing_a_string_that_holds_longer_values_is_refused(runtime, runtime_for):
    too_long = scalar(runtime.engine, "SELECT COUNT(*) FROM task WHERE LENGTH(short_description) > 10")
    assert too_long > 0
    narrow = runtime_for(short_description(10))

    with pytest.raises(DataLossRefused) as refused:
        migrate(narrow.engine, narrow.storage)

    assert refused.value.losses == [f"{too_long} values of task.short_description longer than 10"]
    assert columns(narrow.engine, "task")["short_description"].length == 160
    longest = scalar(runtime.engine, "SELECT MAX(LENGTH(short_description)) FROM task")
    assert longest > 10, "values were not truncated"


def test_narrowing_is_applied_when_every_value_fits(runtime, runtime_for):
    with runtime.engine.begin() as conn:
        conn.execute(sa.text("UPDATE task SET short_description = SUBSTR(short_description, 1, 100)"))
    narrow = runtime_for(short_description(120))
    done = migrate(narrow.engine, narrow.storage)
    assert [step for step in done if step.startswith("change field")] == [
        "change field task.short_description from VARCHAR(160) to VARCHAR(120)"]
    assert done[-1] == "build the text index of task (short_description, description)"  # its column changed
    assert columns(narrow.engine, "task")["short_description"].length == 120


def test_widening_a_string_is_applied(runtime, runtime_for):
    descriptions = scalar(runtime.engine, "SELECT COUNT(*) FROM task WHERE short_description IS NOT NULL")
    wide = runtime_for(short_description(400))

    done = migrate(wide.engine, wide.storage)

    assert done == ["change field task.short_description from VARCHAR(160) to VARCHAR(400)",
                    "build the text index of task (short_description, description)"]  # over the changed column
    assert columns(wide.engine, "task")["short_description"].length == 400
    assert scalar(wide.engine, "SELECT COUNT(*) FROM task WHERE short_description IS NOT NULL") == descriptions
    text = "A very long subject " * 15
    with wide.transaction() as service:
        case = service.insert("sn_customerservice_case", {"short_description": text})
    with wide.transaction() as service:
        assert service.get("sn_customerservice_case", case["sys_id"])["short_description"] == text
    assert planned(wide) == []


def test_dropping_a_table_with_rows_is_refused(runtime, runtime_for):
    with_note = runtime_for(with_note_table())
    migrate(with_note.engine, with_note.storage)
    with with_note.transaction() as service:
        service.insert("u_note", {"title": "Keep me"})
    assert planned(with_note) == [], "a second migrate with unchanged definitions plans nothing"
    assert migrate(with_note.engine, with_note.storage) == []

    with pytest.raises(DataLossRefused) as refused:
        migrate(runtime.engine, runtime.storage)

    assert refused.value.losses == ["table u_note and its 1 rows"]
    assert sa.inspect(runtime.engine).has_table("u_note")
    assert scalar(runtime.engine, "SELECT COUNT(*) FROM u_note") == 1
    done = migrate(runtime.engine, runtime.storage, force=True)
    assert [step for step in done if not step.endswith(" on u_note")] == ["drop table u_note"], done
    assert not sa.inspect(runtime.engine).has_table("u_note")
    assert planned(runtime) == []


def test_removing_a_child_table_with_rows_is_refused(runtime, runtime_for):
    """A child of task is stored in task's table: removing its definition changes no column,
    but its rows would be left with a class no definition knows."""
    child = runtime_for(changed({"tables/u_incident.yaml": "table: u_incident\nlabel: Incident\nextends: task\n"}))
    assert migrate(child.engine, child.storage) == []
    with child.transaction() as service:
        incident = service.insert("u_incident", {"short_description": "Printer on fire"})
    cases = scalar(runtime.engine, "SELECT COUNT(*) FROM task WHERE sys_class_name = 'sn_customerservice_case'")

    with pytest.raises(DataLossRefused) as refused:
        migrate(runtime.engine, runtime.storage)

    assert refused.value.losses == ["table u_incident and its 1 rows (stored in task)"]
    assert scalar(runtime.engine, "SELECT COUNT(*) FROM task WHERE sys_id = :id", id=incident["sys_id"]) == 1
    assert migrate(runtime.engine, runtime.storage, force=True) == ["delete the rows of removed table u_incident from task"]
    assert scalar(runtime.engine, "SELECT COUNT(*) FROM task WHERE sys_class_name = 'u_incident'") == 0
    assert scalar(runtime.engine, "SELECT COUNT(*) FROM task WHERE sys_class_name = 'sn_customerservice_case'") == cases
    assert planned(runtime) == []


# -- caseloom init ----------------------------------------------------------------------------


@pytest.fixture
def fresh_env(tmp_path, monkeypatch):
    """Environment for `caseloom init` on a fresh SQLite file; returns an engine on it."""
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    monkeypatch.setenv("CASELOOM_DATABASE_URL", url)
    monkeypatch.setenv("CASELOOM_DEFINITIONS", str(DEFINITIONS))
    monkeypatch.setenv("CASELOOM_INSTANCE", str(tmp_path / "instance"))
    monkeypatch.setenv("CASELOOM_QUEUE", f"sqlite:///{tmp_path / 'queue.db'}")
    engine = sa.create_engine(url)
    yield engine
    engine.dispose()


def init(*args: str):
    return CliRunner().invoke(main, ["init", *args])


def test_init_without_demo_creates_an_empty_schema(fresh_env):
    result = init()
    assert result.exit_code == 0, result.output
    assert re.search(r"schema: \d+ change\(s\)", result.stdout)
    assert "demo users" not in result.stdout
    assert scalar(fresh_env, "SELECT COUNT(*) FROM customer_account") == 0
    assert scalar(fresh_env, "SELECT COUNT(*) FROM sys_properties") == len(load_folder(DEFINITIONS).properties)
    again = init()
    assert again.exit_code == 0, again.output
    assert "schema: 0 change(s)" in again.stdout


def test_init_demo_is_idempotent(fresh_env):
    first = init("--demo", "--accounts", "4")
    assert first.exit_code == 0, first.output
    assert "demo users (user / password: roles):" in first.stdout
    for line in ["admin / admin: admin", "agent / agent: sn_customerservice_agent",
                 "manager / manager: sn_customerservice_manager", "author / author: sn_publications.author"]:
        assert f"  {line}" in first.stdout.splitlines(), line
    assert scalar(fresh_env, "SELECT COUNT(*) FROM customer_account") == 4
    cases = scalar(fresh_env, "SELECT COUNT(*) FROM task WHERE sys_class_name = 'sn_customerservice_case'")
    users = scalar(fresh_env, "SELECT COUNT(*) FROM sys_user")

    second = init("--demo", "--accounts", "4")

    assert second.exit_code == 0, second.output
    assert "schema: 0 change(s)" in second.stdout
    assert "demo data: already loaded" in second.stdout
    assert scalar(fresh_env, "SELECT COUNT(*) FROM customer_account") == 4
    assert scalar(fresh_env, "SELECT COUNT(*) FROM task WHERE sys_class_name = 'sn_customerservice_case'") == cases
    assert scalar(fresh_env, "SELECT COUNT(*) FROM sys_user") == users
    assert scalar(fresh_env, "SELECT COUNT(*) FROM sys_properties") == len(load_folder(DEFINITIONS).properties)


def test_init_accounts_scales_the_demo(fresh_env):
    result = init("--accounts", "50")
    assert result.exit_code == 0, result.output
    assert scalar(fresh_env, "SELECT COUNT(*) FROM customer_account") == 50
    assert scalar(fresh_env, "SELECT COUNT(*) FROM customer_account WHERE primary_contact IS NULL") == 0
    linked = scalar(fresh_env, "SELECT COUNT(*) FROM customer_account a JOIN customer_contact c "
                               "ON c.sys_id = a.primary_contact AND c.account = a.sys_id")
    assert linked == 50, "every primary contact exists and belongs to its account"
    assert scalar(fresh_env, "SELECT COUNT(DISTINCT number) FROM customer_account") == 50
    with fresh_env.connect() as conn:
        states = set(conn.execute(sa.text(
            "SELECT DISTINCT state FROM task WHERE sys_class_name = 'sn_customerservice_case'")).scalars())
    assert states == {1, 10, 18, 6, 3, 7}


def test_init_refuses_data_loss_and_force_accepts_it(fresh_env, tmp_path, monkeypatch):
    assert init("--demo", "--accounts", "3").exit_code == 0
    folder = tmp_path / "definitions"
    shutil.copytree(DEFINITIONS, folder)
    for rel, text in without_city():
        (folder / rel).write_text(text)
    monkeypatch.setenv("CASELOOM_DEFINITIONS", str(folder))

    refused = init()

    assert refused.exit_code == 1
    assert "customer_account.city and its 3 values" in refused.stderr
    assert "city" in columns(fresh_env, "customer_account")
    forced = init("--force")
    assert forced.exit_code == 0, forced.output
    assert "  drop field customer_account.city" in forced.stdout.splitlines()
    assert "city" not in columns(fresh_env, "customer_account")
    assert scalar(fresh_env, "SELECT COUNT(*) FROM customer_account") == 3


def test_init_reports_bad_definitions(fresh_env, tmp_path, monkeypatch):
    (tmp_path / "bad" / "tables").mkdir(parents=True)
    (tmp_path / "bad" / "tables" / "a.yaml").write_text("table: a\nextends: nowhere\n")
    monkeypatch.setenv("CASELOOM_DEFINITIONS", str(tmp_path / "bad"))
    result = init()
    assert result.exit_code == 1
    assert f"{tmp_path}/bad/tables/a.yaml:2:10: extends unknown table 'nowhere'" in result.stderr.splitlines()
    assert not sa.inspect(fresh_env).has_table("customer_account")


def test_an_existing_database_gets_the_delivery_fields_of_sys_email(runtime):
    """A database made before e-mail retries (no attempts, next_attempt, sent_on) is brought up to date by
    `caseloom init`'s migration, its e-mails kept, and they are then delivered as any other."""
    with runtime.transaction() as service:
        kept = service.insert("sys_email", {"recipients": "a@example.test", "subject": "old", "state": "ready"})["sys_id"]
    new = ("attempts", "next_attempt", "sent_on")
    with runtime.engine.begin() as conn:
        for index in sa.inspect(conn).get_indexes("sys_email"):
            if set(index["column_names"]) & set(new):
                conn.execute(sa.text(f'DROP INDEX "{index["name"]}"'))
        for column in new:
            conn.execute(sa.text(f'ALTER TABLE sys_email DROP COLUMN "{column}"'))
    assert {f"add field sys_email.{c}" for c in new} <= set(planned(runtime))
    done = migrate(runtime.engine, runtime.storage)
    assert {f"add field sys_email.{c}" for c in new} <= set(done)
    assert any(step.startswith("create index") and "sent_on" in step for step in done)
    assert planned(runtime) == []
    assert set(new) <= set(columns(runtime.engine, "sys_email"))
    from caseloom.jobs.email import claim

    [row] = claim(runtime)  # attempts is empty on the old row: its first try
    assert (row["sys_id"], row["attempts"]) == (kept, None)


CASES_TABLE = "sn_customerservice_case"


def test_rows_left_empty_before_a_default_now_or_a_boolean_rule_are_filled_once(runtime):
    """A database made before `task.opened_at` declared `default: now` (its cases never opened), or before a
    boolean was never empty, is filled by the next migration: an empty `opened_at` takes the case's own
    `sys_created_on`, an empty boolean `false`. Values given are kept; the dry run says it first, and it
    is done once: a value emptied later is the user's."""
    with runtime.transaction() as service:
        given = service.insert(CASES_TABLE, {"short_description": "Opened long ago", "opened_at": "2020-01-02 03:04:05"})
        legacy = service.insert(CASES_TABLE, {"short_description": "Made before the default"})
        plain = service.insert("task", {"short_description": "A task of no class of its own"})
    made = dt.datetime(2021, 5, 6, 7, 8, 9)
    task, meta = runtime.storage.physical(CASES_TABLE), runtime.storage.internal("sys_meta")
    with runtime.engine.begin() as conn:  # as such a database holds them
        conn.execute(sa.update(task).where(task.c.sys_id == legacy["sys_id"])
                     .values(opened_at=None, proactive=None, sys_created_on=made))
        conn.execute(sa.update(task).where(task.c.sys_id == plain["sys_id"]).values(opened_at=None))
        conn.execute(sa.delete(meta).where(meta.c.name.startswith("filled:")))
    with runtime.engine.connect() as conn:
        said = planned_indexes(conn, runtime.storage, [])
    assert said == ["fill 2 empty task.opened_at with sys_created_on", "fill 1 empty task.proactive with false"]
    assert migrate(runtime.engine, runtime.storage) == [s.replace("fill ", "filled ", 1) for s in said]
    with runtime.transaction() as service:
        assert service.get(CASES_TABLE, legacy["sys_id"])["opened_at"] == made
        assert service.get(CASES_TABLE, legacy["sys_id"])["proactive"] is False
        assert service.get(CASES_TABLE, given["sys_id"])["opened_at"] == dt.datetime(2020, 1, 2, 3, 4, 5)
        assert service.get("task", plain["sys_id"])["opened_at"] == plain["sys_created_on"]
        service.update(CASES_TABLE, legacy["sys_id"], {"opened_at": ""})
    assert migrate(runtime.engine, runtime.storage) == []  # once
    with runtime.transaction() as service:
        assert service.get(CASES_TABLE, legacy["sys_id"])["opened_at"] is None


def test_a_declared_fill_gives_the_rows_held_before_a_field_existed_its_value_once(runtime):
    """CSM's `resolved_at: {fill: {from: closed_at, where: state=3}}`: a database made before cases knew when they
    were resolved has its closed cases resolved when they closed; an open or canceled one stays unresolved, a
    value given is kept; the dry run says it first, and it is done once."""
    with runtime.transaction() as service:
        closed = service.insert(CASES_TABLE, {"short_description": "Closed long ago"})
        resolved = service.insert(CASES_TABLE, {"short_description": "Resolved, with its own moment"})
        open_ = service.insert(CASES_TABLE, {"short_description": "Still open"})
    moment, own = dt.datetime(2021, 5, 6, 7, 8, 9), dt.datetime(2021, 5, 5, 1, 2, 3)
    task, meta = runtime.storage.physical(CASES_TABLE), runtime.storage.internal("sys_meta")
    with runtime.engine.begin() as conn:  # as such a database holds them
        conn.execute(sa.update(task).where(task.c.sys_id.in_([closed["sys_id"], resolved["sys_id"]]))
                     .values(state=3, closed_at=moment, resolved_at=None))
        conn.execute(sa.update(task).where(task.c.sys_id == resolved["sys_id"]).values(resolved_at=own))
        conn.execute(sa.update(task).where(task.c.sys_id == open_["sys_id"]).values(closed_at=moment))
        conn.execute(sa.delete(meta).where(meta.c.name == "filled:task.resolved_at"))
    with runtime.engine.connect() as conn:
        said = planned_indexes(conn, runtime.storage, [])
    assert said == ["fill 1 empty task.resolved_at with closed_at"]
    assert migrate(runtime.engine, runtime.storage) == ["filled 1 empty task.resolved_at with closed_at"]
    with runtime.transaction() as service:
        assert service.get(CASES_TABLE, closed["sys_id"])["resolved_at"] == moment
        assert service.get(CASES_TABLE, resolved["sys_id"])["resolved_at"] == own
        assert service.get(CASES_TABLE, open_["sys_id"])["resolved_at"] is None  # not closed: not resolved
    with runtime.engine.begin() as conn:  # emptied again (the field is read-only: as a rule would)
        conn.execute(sa.update(task).where(task.c.sys_id == closed["sys_id"]).values(resolved_at=None))
    assert migrate(runtime.engine, runtime.storage) == []  # once


@pytest.mark.parametrize(("fill", "message"), [
    ("{from: nothing}", "fill from 'nothing': name another field of 'u_thing'"),
    ("{from: done}", "fill from 'done': name another field of 'u_thing'"),
    ("{from: title}", "fill from 'title': 'done' is a datetime field and 'title' a string field; a fill copies a "
                      "value of the same type"),
    ("{from: finished, where: 'stat=3'}", "fill where: stat: table 'u_thing' has no field 'stat'"),
    ("{from: finished, where: 'owner.name=x'}", "fill where: a fill's condition reads the row's own fields, with no "
                                                "ORDERBY and no dot-walk (owner.name)"),
])
def test_a_fill_that_cannot_be_made_is_refused_at_its_key(tmp_path, fill, message):
    from caseloom.definitions import DefinitionErrors, load_folder

    folder = tmp_path / "defs"
    (folder / "tables").mkdir(parents=True)
    (folder / "tables" / "u_thing.yaml").write_text(
        "table: u_thing\nfields:\n  title: {type: string}\n  state: {type: integer}\n  finished: {type: datetime}\n"
        "  owner: {type: reference, to: sys_user}\n"
        f"  done: {{type: datetime, fill: {fill}}}\n")
    with pytest.raises(DefinitionErrors) as caught:
        load_folder(folder)
    assert [str(e) for e in caught.value.errors if message in str(e) and "u_thing.yaml:7:" in str(e)], caught.value
