"""The sandbox for recipient scripts: policy, limits, isolation, the data API, `caseloom script run`.

Pure sandbox tests need no database; the data API and the CLI against the database use the
`runtime` / `config` fixtures (SQLite, and PostgreSQL when configured). Limits are small here
(1 s of CPU, 64 MB, 1 KB of log, 100 result items) so each limit test takes about a second.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from caseloom.cli import main
from caseloom.properties import Properties
from caseloom.query import Query, Term
from caseloom.sandbox import (
    DatabaseData,
    FixtureData,
    Limits,
    ScriptFailed,
    ScriptRefused,
    ScriptResult,
    WorkerPool,
    check_script,
    run_script,
    script_source,
    scripts_enabled,
    service_data,
)
from caseloom.sandbox.pool import worker_environment
from caseloom.users import actor_for
from conftest import DEFINITIONS, ROOT

FIXTURE = ROOT / "scripts" / "recipients" / "fixture.json"
BY_COUNTRY = ROOT / "scripts" / "recipients" / "by_country.py"
EXPIRING = ROOT / "scripts" / "recipients" / "expiring.py"
SMALL = Limits(cpu_seconds=1, wall_seconds=10, memory_mb=64, log_bytes=1024, result_items=100)
ACME, GLOBEX, INITECH = "a0000000000000000000000000000001", "a0000000000000000000000000000002", \
    "a0000000000000000000000000000003"


@pytest.fixture(scope="module")
def pool():
    pool = WorkerPool(size=2)
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def fixture_data():
    return FixtureData.from_file(FIXTURE)


@pytest.fixture
def run(pool, fixture_data):
    """run(source, params=..., limits=..., data=...): a script against the fixture, in the test pool."""

    def run(source: str, params: dict | None = None, limits: Limits = SMALL, data=None) -> ScriptResult:
        return run_script(source, "bad.py", data or fixture_data, params, limits, pool=pool)

    return run


def still_works(run) -> None:
    """After a refusal, a failure or a killed worker, the next script runs normally."""
    assert run("result = [a['sys_id'] for a in records.query('customer_account', country='FR')]").sys_ids == [GLOBEX]


# -- refused before running --------------------------------------------------------------

REFUSED = [
    ("import os", 1, "import is not allowed"),
    ("x = 1\nfrom os import path", 2, "import is not allowed"),
    ("result = __import__('os')", 1, '"__import__" is an invalid variable name'),
    ("x = ().__class__.__bases__[0].__subclasses__()", 1, 'starts with "_"'),
    ("g = (x for x in [1])\nresult = g.gi_frame.f_back.f_globals", 2, "restricted name"),
    ("def f():\n    yield 1\nresult = f().gi_code", 3, '"gi_code" is a restricted name'),
    ("g = (x for x in [1])\nresult = g.gi_running", 2, "reaches interpreter internals"),
    ("result = eval('1 + 1')", 1, "Eval calls are not allowed"),
    ("exec('result = []')", 1, "Exec calls are not allowed"),
    ("class A:\n    pass", 1, "class statements are not allowed"),
    ("_secret = 1", 1, '"_secret" is an invalid variable name'),
    ("async def f():\n    pass", 1, "AsyncFunctionDef statements are not allowed"),
    ("result = [\n", 1, "SyntaxError"),
]


@pytest.mark.parametrize("source,line,why", REFUSED, ids=[r[2][:30] + f"@{i}" for i, r in enumerate(REFUSED)])
def test_refused_before_running_with_the_line(run, source, line, why):
    with pytest.raises(ScriptRefused) as refused:
        run(source)
    assert (refused.value.filename, refused.value.line) == ("bad.py", line)
    assert why in refused.value.why
    assert str(refused.value).startswith(f"bad.py:{line}: ")
    with pytest.raises(ScriptRefused):  # the same check, without a worker
        check_script(source, "bad.py")
    still_works(run)


# -- refused while running (the guards) --------------------------------------------------

FAILED = [
    ("g = (x for x in [1])\nresult = '{0.gi_frame}'.format(g)", 2, '"gi_frame" reaches interpreter internals'),
    ("result = '{0.__class__}'.format(1)", 1, '"__class__" starts with "_"'),
    ("result = '{0[0].__class__.__mro__}'.format([1])", 1, '"__class__" starts with "_"'),
    ("g = (x for x in [1])\nresult = '{g.gi_frame.f_back}'.format_map({'g': g})", 2, "gi_frame"),
    ("g = (x for x in [1])\nresult = str.format('{0.gi_code}', g)", 2, "gi_code"),
    ("result = '{0:{1.__class__}}'.format(1, 2)", 1, '"__class__" starts with "_"'),
    ("def f():\n    return 1 / 0\ntry:\n    f()\nexcept Exception as e:\n    result = '{0.__traceback__}'.format(e)",
     6, "__traceback__"),
    ("result = open('/etc/passwd').read()", 1, "NameError: name 'open' is not defined"),
    ("result = getattr(1, '__cla' + 'ss__')", 1, "NameError: name 'getattr' is not defined"),
    ("result = type(1)", 1, "NameError: name 'type' is not defined"),
    ("result = vars()", 1, "NameError"),
    ("datetime.date = None", 1, "TypeError"),
    ("result = datetime.sys", 1, "AttributeError"),
    ("print('x', file=records)", 1, "print(file=...) is not available"),
    ("result = records.query('customer_account', country=['DE'])", 1, "must be a string, number, boolean or None"),
    ("x = 1\ny = 2\nresult = x / (y - 2)", 3, "ZeroDivisionError: division by zero"),
    ("raise SystemExit(0)", 1, "SystemExit"),
    ("def f(n):\n    return f(n + 1)\nf(0)", 2, "RecursionError"),
]


@pytest.mark.parametrize("source,line,error", FAILED, ids=[f[2][:30] + f"@{i}" for i, f in enumerate(FAILED)])
def test_refused_while_running_names_the_error_and_line(run, source, line, error):
    with pytest.raises(ScriptFailed) as failed:
        run(source)
    assert failed.value.line == line and failed.value.limit is None
    assert str(failed.value).startswith(f"bad.py:{line}: ")
    assert error in str(failed.value)
    still_works(run)


def test_str_format_works_on_plain_data(run):
    source = """
row = {"name": "Acme", "n": 3}
result = []
log("{0} has {1:>3} cases".format(row["name"], row["n"]), "{name}!".format_map(row), "{0[name]}".format(row),
    str.format("{x}", x=1), f"{row['n']:03d}", "%s/%d" % ("a", 2))
"""
    assert run(source).log == ["Acme has   3 cases Acme! Acme 1 003 a/2"]


# -- limits: stopped, named, and the next run works ----------------------------------------


def test_an_infinite_loop_is_stopped_at_the_cpu_limit(run):
    with pytest.raises(ScriptFailed) as failed:
        run("while True:\n    pass")
    assert failed.value.limit == "cpu"
    assert str(failed.value) == "bad.py: CPU time limit of 1 s exceeded"
    still_works(run)


def test_a_script_that_outlives_the_wall_clock_is_killed(run):
    with pytest.raises(ScriptFailed) as failed:
        run("while True:\n    pass", limits=Limits(cpu_seconds=60, wall_seconds=1))
    assert str(failed.value) == "bad.py: wall-clock limit of 1 s exceeded"
    still_works(run)


@pytest.mark.parametrize("source", [
    "x = 'a' * (512 * 1024 * 1024)",
    "x = []\nwhile True:\n    x.append('a' * 100000)",
    "x = [0] * (100 * 1000 * 1000)",
])
def test_a_memory_bomb_is_stopped_at_the_memory_limit(run, source):
    with pytest.raises(ScriptFailed) as failed:
        run(source)
    assert str(failed.value) == "bad.py: memory limit of 64 MB exceeded"
    still_works(run)


def test_a_script_that_catches_memory_error_stays_within_the_limit(run):
    source = "try:\n    x = 'a' * (512 * 1024 * 1024)\nexcept MemoryError:\n    x = ''\nresult = ['ok']"
    assert run(source).sys_ids == ["ok"]


@pytest.mark.parametrize("source", [
    "while True:\n    log('x' * 100)",
    "while True:\n    print('x' * 100)",
    "try:\n    while True:\n        log('x' * 100)\nexcept BaseException:\n    pass\nresult = []",
])
def test_a_flood_of_output_is_stopped_at_the_log_limit(run, source):
    with pytest.raises(ScriptFailed) as failed:
        run(source)
    assert failed.value.limit == "output"
    assert str(failed.value) == "bad.py: output limit of 1 KB (log) exceeded"
    still_works(run)


def test_a_result_past_the_item_limit_is_refused(run):
    assert run("result = [str(i) for i in range(100)]").count == 100
    with pytest.raises(ScriptFailed) as failed:
        run("result = [str(i) for i in range(101)]")
    assert str(failed.value) == "bad.py: result limit of 100 items exceeded"
    still_works(run)


def test_a_result_past_the_size_limit_is_refused(run):
    with pytest.raises(ScriptFailed) as failed:
        run("result = [{'sys_id': 'a', 'notes': 'x' * 20000}]", limits=Limits(result_bytes=10000))
    assert str(failed.value) == "bad.py: result limit of 10000 bytes exceeded"
    still_works(run)


def test_two_runs_at_once_each_get_a_worker(run):
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(run("result = ['x']").sys_ids)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [["x"]] * 4


def test_a_warm_run_does_not_pay_a_process_start(run):
    run("result = []")
    assert run("result = []").elapsed_ms < 500  # a process start alone costs more (about 150 ms here)


def test_the_worker_gets_no_secrets_from_our_environment(monkeypatch):
    monkeypatch.setenv("CASELOOM_DATABASE_URL", "postgresql+psycopg://user:secret@db/prod")
    monkeypatch.setenv("CASELOOM_SECRET_KEY", "s3cret")
    env = worker_environment()
    assert set(env) == {"PATH", "PYTHONPATH", "PYTHONUTF8"}
    assert "secret" not in json.dumps(env)


# -- globals and result shapes --------------------------------------------------------------

@pytest.mark.parametrize("source,sys_ids", [
    ("result = ['a', 'b', 'a']", ["a", "b"]),
    ("result = [{'sys_id': 'a', 'name': 'Acme'}, {'sys_id': 'b'}]", ["a", "b"]),
    ("result = {'accounts': ['a', 'b']}", ["a", "b"]),
    ("result = {'consumers': ['c']}", ["c"]),
    ("result = {'contacts': []}", []),
    ("result = ('a',)", ["a"]),
    ("result = {'a'}", ["a"]),
    ("result = records.query('customer_account', country='DE', active=True)", [ACME]),
])
def test_result_shapes(run, source, sys_ids):
    ran = run(source)
    assert ran.sys_ids == sys_ids and ran.count == len(sys_ids)


@pytest.mark.parametrize("source,message", [
    ("x = 1", "the script did not set `result`"),
    ("result = 5", "`result` must be a list of sys_ids"),
    ("result = {'people': [], 'places': []}", "got a dict with keys people, places"),
    ("result = [1]", "result item 0 is 1"),
    ("result = [{'name': 'x'}]", "result item 0 is a record without a sys_id"),
    ("result = [records]", "`result` is not plain data"),
])
def test_results_of_the_wrong_shape_are_refused(run, source, message):
    with pytest.raises(ScriptFailed) as failed:
        run(source)
    assert message in str(failed.value)


def test_globals_params_datetime_log_and_builtins(run):
    source = """
start = datetime.datetime.strptime(params["day"], "%Y-%m-%d")
later = start + datetime.timedelta(days=params["days"])
n = 0
for i, (a, b) in enumerate(zip([1, 2], [3, 4])):
    n += a * b + i
first, *rest = sorted(set(map(int, ["3", "1", "2"])), reverse=True)
log(later.strftime("%Y-%m-%d"), datetime.date(2024, 1, 2).isoformat(), n, first, rest)
log(sum([1, 2]), min(3, 4), max([5, 6]), any([0, 1]), all([]), len("ab"), list(reversed([1, 2])),
    list(filter(None, [0, 7])), round(2.567, 1), abs(-1), isinstance(params, dict), tuple([1]), bool(0))
print("printed", str(datetime), float("1.5"))
result = [str(later.year)]
"""
    ran = run(source, params={"day": "2024-02-27", "days": 3})
    assert ran.sys_ids == ["2024"]
    assert ran.log == ["2024-03-01 2024-01-02 12 3 [2, 1]",
                       "3 3 6 True True 2 [2, 1] [7] 2.6 1 True (1,) False",
                       "printed <datetime: date, datetime, timedelta> 1.5"]


def test_params_must_be_plain_data(run):
    with pytest.raises(TypeError, match="params must be plain data"):
        run("result = []", params={"when": object()})


# -- the data API -------------------------------------------------------------------------

def test_fixture_records_are_plain_dicts(run):
    source = """
accounts = records.query("customer_account", country="DE")
one = records.get("customer_account", accounts[0]["sys_id"])
log(all(isinstance(a, dict) for a in accounts), one["name"], records.get("customer_account", "nope"))
log(len(records.query("sn_customerservice_case", state="10")), len(records.query("customer_account", active="true")))
result = accounts
"""
    ran = run(source)
    assert ran.log == ["True Acme Corp None", "1 3"]
    assert sorted(ran.sys_ids) == [ACME, "a0000000000000000000000000000004"]



def test_large_answers_cross_the_pipe(run):
    many = FixtureData({"customer_account": [{"sys_id": f"{i:032x}", "name": f"Account {i}", "notes": "x" * 200}
                                             for i in range(5000)]})
    ran = run("result = records.query('customer_account')", limits=Limits(result_items=5000), data=many)
    assert ran.count == 5000 and ran.sys_ids[-1] == f"{4999:032x}"

@pytest.mark.parametrize("source,message", [
    ("records.query('cmdb_ci')", "RecordsError: unknown table 'cmdb_ci'"),
    ("records.query('customer_account', contry='DE')", "RecordsError: table 'customer_account' has no field 'contry'"),
])
def test_fixture_refusals_reach_the_script_as_records_errors(run, source, message):
    with pytest.raises(ScriptFailed) as failed:
        run(source)
    assert message in str(failed.value)
    caught = run(f"try:\n    {source}\nexcept Exception as e:\n    log(str(e))\nresult = []")
    assert caught.log and f"RecordsError: {caught.log[0]}" in str(failed.value)


def author(runtime):
    with runtime.engine.connect() as conn:
        users = runtime.storage.physical("sys_user")
        sys_id = conn.execute(sa.select(users.c.sys_id).where(users.c.user_name == "author")).scalar_one()
        return actor_for(runtime.storage, conn, sys_id)


def test_database_records_are_plain_and_follow_read_access(runtime, pool):
    data = DatabaseData(runtime, author(runtime))
    ran = run_script("result = records.query('customer_account', country='DE', active=True)", "db.py", data,
                     limits=SMALL, pool=pool)
    with runtime.engine.connect() as conn:
        expected = runtime.records(conn).query("customer_account", Query(Term("country", "eq", "DE")), ["sys_id"])
    assert sorted(ran.sys_ids) == sorted(r["sys_id"] for r in expected) and ran.sys_ids
    for record in ran.result:
        assert all(value is None or type(value) in (str, int, float, bool) for value in record.values())
        assert len(record["sys_created_on"]) == 19 and record["sys_created_on"][10] == " "  # "YYYY-MM-DD HH:MM:SS"
    one = run_script(f"result = [records.get('customer_account', '{ran.sys_ids[0]}')]", "db.py", data,
                     limits=SMALL, pool=pool)
    assert one.result[0]["name"] == ran.result[0]["name"]

    with pytest.raises(ScriptFailed) as denied:
        run_script("result = records.query('sys_audit')", "db.py", data, limits=SMALL, pool=pool)
    assert "db.py:1: RecordsError: records.query('sys_audit'): user 'author' may not read records of 'sys_audit'" \
        == str(denied.value)


@pytest.mark.parametrize("source,message", [
    ("records.query('cmdb_ci')", "table 'cmdb_ci' does not exist"),
    ("records.query('customer_account', contry='DE')", "table 'customer_account' has no field 'contry'"),
    ("records.query('sys_user', user_password='x')", "password fields cannot be queried"),
])
def test_database_refusals_reach_the_script(runtime, pool, source, message):
    with pytest.raises(ScriptFailed) as failed:
        run_script(source, "db.py", DatabaseData(runtime), limits=SMALL, pool=pool)
    assert "RecordsError" in str(failed.value) and message in str(failed.value)


def test_password_hashes_never_reach_a_script(runtime, pool):
    ran = run_script("result = records.query('sys_user', user_name='author')", "db.py", DatabaseData(runtime),
                     limits=SMALL, pool=pool)
    assert ran.count == 1 and "user_password" not in ran.result[0] and ran.result[0]["user_name"] == "author"



def test_service_data_reads_inside_the_callers_transaction(runtime, pool):
    with runtime.transaction() as service:
        new = service.insert("customer_account", {"name": "Uncommitted GmbH", "country": "LU"})
        ran = run_script("result = records.query('customer_account', country='LU')", "db.py", service_data(service),
                         limits=SMALL, pool=pool)
        assert ran.sys_ids == [new["sys_id"]]


def test_script_source_reads_paths_under_the_scripts_folder():
    folder = ROOT / "scripts"
    source, filename = script_source(None, "recipients/expiring.py", "list:1", folder)
    assert filename == str(folder / "recipients/expiring.py") and "records.query" in source
    assert script_source(None, "scripts/recipients/expiring.py", "list:1", folder) == (source, filename)
    assert script_source(None, "result = ['a']\n", "list:1", folder) == ("result = ['a']\n", "list:1")
    for value, why in [("../pyproject.py", "must stay inside the scripts folder"), ("", "the script field is empty"),
                       ("recipients/missing.py", "cannot read the script")]:
        with pytest.raises(ScriptRefused, match=why):
            script_source(None, value, "list:1", folder)

# -- caseloom script run ------------------------------------------------------------------

def cli(args: list[str], env: dict | None = None):
    return CliRunner().invoke(main, ["script", "run", *args], env=env)


@pytest.fixture
def offline(tmp_path):
    """The environment of a --records run on a machine without a database."""
    return {"CASELOOM_DATABASE_URL": f"sqlite:///{tmp_path / 'absent.db'}", "CASELOOM_DEFINITIONS": str(DEFINITIONS)}


def test_cli_runs_a_script_against_a_fixture(offline, tmp_path):
    ran = cli([str(BY_COUNTRY), "--records", str(FIXTURE)], offline)
    assert ran.exit_code == 0, ran.stderr
    out = json.loads(ran.stdout)
    assert out["result"] == {"accounts": [ACME, GLOBEX]} and out["count"] == 2 and out["elapsed_ms"] >= 0
    assert ran.stderr == "log: 2 active accounts in DE, FR\n"
    ran = cli([str(EXPIRING), "--records", str(FIXTURE), "--params", '{"days": 30}'], offline)
    assert json.loads(ran.stdout)["result"] == {"accounts": [ACME, INITECH]}
    assert not (tmp_path / "absent.db").exists()  # a --records run never creates a database


@pytest.mark.parametrize("source,code,stderr", [
    ("x = 1\nimport os\n", 2, "{file}:2: import is not allowed"),
    ("x = 1\nresult = [x / 0]\n", 3, "{file}:2: ZeroDivisionError: division by zero"),
    ("while True:\n    log('x' * 1000)\n", 3, "{file}: output limit of 64 KB (log) exceeded"),
    ("result = 'nope'\n", 3, "{file}: `result` must be a list of sys_ids"),
])
def test_cli_exit_codes(offline, tmp_path, source, code, stderr):
    file = tmp_path / "script.py"
    file.write_text(source)
    ran = cli([str(file), "--records", str(FIXTURE)], offline)
    assert ran.exit_code == code
    assert ran.stdout == ""
    assert ran.stderr.startswith(stderr.format(file=file))


@pytest.mark.parametrize("args,message", [
    (["missing.py"], "cannot read missing.py"),
    ([str(BY_COUNTRY), "--params", "{"], "--params is not valid JSON"),
    ([str(BY_COUNTRY), "--params", "[1]"], "--params must be a JSON object"),
    ([str(BY_COUNTRY), "--records", "missing.json"], "missing.json: No such file"),
])
def test_cli_usage_problems_exit_1(offline, args, message):
    ran = cli(args, offline)
    assert ran.exit_code == 1 and message in ran.stderr


def test_cli_as_a_real_process(offline, tmp_path):
    refused = tmp_path / "refused.py"
    refused.write_text("result = ().__class__\n")
    command = [sys.executable, "-m", "caseloom.cli", "script", "run"]
    env = {**offline, "PATH": "/usr/bin:/bin"}
    ok = subprocess.run([*command, str(BY_COUNTRY), "--records", str(FIXTURE)], capture_output=True, text=True,
                        env=env, cwd=tmp_path, timeout=60)
    assert ok.returncode == 0 and json.loads(ok.stdout)["count"] == 2
    no = subprocess.run([*command, str(refused), "--records", str(FIXTURE)], capture_output=True, text=True,
                        env=env, cwd=tmp_path, timeout=60)
    assert no.returncode == 2 and no.stderr.startswith(f'{refused}:1: "__class__" is an invalid attribute name')


def database_env(config) -> dict:
    return {"CASELOOM_DATABASE_URL": config.database_url, "CASELOOM_DEFINITIONS": str(DEFINITIONS)}


def test_cli_runs_against_the_database_as_the_system_user(runtime, config):
    ran = cli([str(BY_COUNTRY), "--params", '{"countries": ["DE", "US"]}'], database_env(config))
    assert ran.exit_code == 0, ran.stderr
    with runtime.engine.connect() as conn:
        service = runtime.records(conn)
        expected = {r["sys_id"] for c in ("DE", "US")
                    for r in service.query("customer_account", Query(Term("country", "eq", c)), ["sys_id"])}
    assert set(json.loads(ran.stdout)["result"]["accounts"]) == expected and expected


# -- the kill switch ---------------------------------------------------------------------

def set_scripts_enabled(runtime, value: str) -> None:
    with runtime.transaction() as service:
        row = service.query("sys_properties", Query(Term("name", "eq", "caseloom.scripts.enabled")), ["sys_id"])[0]
        service.update("sys_properties", row["sys_id"], {"value": value})


def test_the_kill_switch(runtime, config, definitions):
    assert definitions.properties["caseloom.scripts.enabled"].default is True
    with runtime.engine.connect() as conn:
        assert scripts_enabled(Properties(runtime.defs, runtime.storage, conn))
    set_scripts_enabled(runtime, "false")
    with runtime.engine.connect() as conn:
        assert not scripts_enabled(Properties(runtime.defs, runtime.storage, conn))
    for args in ([str(BY_COUNTRY)], [str(BY_COUNTRY), "--records", str(FIXTURE)]):
        ran = cli(args, database_env(config))
        assert ran.exit_code == 2 and ran.stdout == ""
        assert ran.stderr == f"{BY_COUNTRY}: scripts are disabled: the system property caseloom.scripts.enabled is false\n"
    set_scripts_enabled(runtime, "true")  # applies to the next run, no restart
    assert cli([str(BY_COUNTRY)], database_env(config)).exit_code == 0


def test_scripts_enabled_reads_mappings_too():
    assert scripts_enabled({}) is True
    assert scripts_enabled({"caseloom.scripts.enabled": False}) is False
