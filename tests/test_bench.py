"""`caseloom bench` runs end to end at a small scale and prints one well-formed line per benchmark.

The figures themselves are measured by the command, never asserted here (contract section 10)."""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import POSTGRES_URL, ROOT

BENCHMARKS = ["recipients_condition", "create_child_cases", "sla_attach", "sync_children", "close_major_case",
              "sla_repair", "sla_tick", "email_ingest", "event_ingest", "email_delivery", "list_view", "form_view",
              "parent_view", "menu_lists", "api_get", "stats_group_by", "dashboard_view", "quick_search", "similar_cases",
              "row_rule_list", "portal_list", "export_csv"]
KEYS = {"name", "n", "seconds", "per_second", "baseline_seconds", "ratio"}
WHERE = {"database", "machine", "settings"}  # where the figures came from, on every line beside the contract's keys

pytestmark = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)")


def run_bench(*extra: str) -> subprocess.CompletedProcess:
    """The command's result; its `left` holds what the run left in the temporary folder (nothing)."""
    temporary = tempfile.mkdtemp(prefix="bench-tmp-")
    env = {**os.environ, "CASELOOM_DEFINITIONS": str(ROOT / "definitions"), "CASELOOM_UI": str(ROOT / "ui"),
           "TMPDIR": temporary}
    try:
        done = subprocess.run([sys.executable, "-m", "caseloom.cli", "bench", "--scale", "1000", "--json", *extra],
                              capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
        done.left = sorted(str(path.relative_to(temporary)) for path in Path(temporary).rglob("*"))
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return done


def check_lines(done: subprocess.CompletedProcess, names: list[str] = BENCHMARKS, database: str = "SQLite") -> None:
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.left == []  # the scratch folder, its database, snapshots and queue are removed
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["name"] for line in lines] == names
    cpus = os.cpu_count()
    for line in lines:
        assert set(line) == KEYS | WHERE, line
        assert re.fullmatch(rf"{database} \d+\.\d+(\.\d+)?", line["database"]), line
        assert line["settings"].startswith("journal_mode=WAL, synchronous=NORMAL" if database == "SQLite" else
                                           "shared_buffers="), line
        assert line["machine"].startswith(f"{cpus} CPU") and f"Python {sys.version.split()[0]}" in line["machine"], line
        assert line["n"] > 0 and line["seconds"] > 0 and line["baseline_seconds"] > 0, line
        assert line["ratio"] == round(line["seconds"] / line["baseline_seconds"], 2), line
        assert line["per_second"] == round(line["n"] / line["seconds"], 1), line
    by_name = {line["name"]: line for line in lines}
    assert by_name["create_child_cases"]["n"] == 1000  # one child per account of the list
    assert by_name["sla_attach"]["n"] == 1000  # the same children, against the same made with no SLA
    # the medians of three runs each way, each on a copy of the database before create_child_cases
    attach = next(line for line in done.stderr.splitlines() if line.startswith("# sla_attach: "))
    runs = re.fullmatch(r"# sla_attach: median (\S+) s with 2\.0 SLAs per child \((.+)\), (\S+) s with no SLA "
                        r"\((.+)\), each run on a copy of the same database", attach)
    assert runs, attach
    withs, withouts = ([float(x) for x in runs[i].split(", ")] for i in (2, 4))
    assert len(withs) == len(withouts) == 3
    assert float(runs[1]) == round(statistics.median(withs), 2) == round(by_name["sla_attach"]["seconds"], 2)
    assert float(runs[3]) == round(statistics.median(withouts), 2) == round(by_name["sla_attach"]["baseline_seconds"], 2)
    assert by_name["sla_repair"]["n"] == 1001  # the children and their major case, from their history
    assert by_name["parent_view"]["n"] == 1000  # the form of the major case the children were made for
    # the page, then its workspace's communications, which it draws after it, as a browser completes it
    assert re.search(r"# parent_view: median \S+ ms over 10 visits of the parent's form and the 1 part\(s\) of its "
                     r"workspace drawn after it, with its 1,000 children; the same \d+ \+ \d+ statements", done.stderr)
    # every list of the menu, sorted and filtered as its module says, the slowest against its statements
    assert by_name["menu_lists"]["n"] == 11_001
    menu = re.search(r"# menu_lists: 29 lists of the menu with 11,001 records, the slowest '[^']+' \(median of 10\) "
                     r"[\d.]+ ms; its \d+( to \d+)? statements by the plain driver [\d.]+ ms\. Each, ms: (.+)", done.stderr)
    assert menu and len(menu[2].split(", ")) == 29 and re.search(r"\bOpen cases [\d.]+\b", menu[2]), done.stderr[-2000:]
    assert "# sla_repair: 1,001 records, " in done.stderr
    assert by_name["sla_tick"]["n"] == 100  # ten running SLAs per unit of scale, one in a hundred due
    assert "# sla_attach: " in done.stderr and "with 2.0 SLAs per child" in done.stderr
    assert by_name["recipients_condition"]["n"] == 10_000  # the condition ran over every account
    assert by_name["email_ingest"]["n"] == 2000  # 1,000 new messages, each with a reply
    assert "# email_ingest: 1,000 commented, 1,000 created" in done.stderr
    assert by_name["event_ingest"]["n"] == 20_000  # in batches of 1,000 over 200 nodes
    assert "# event_ingest: 200 alerts opened, " in done.stderr
    assert by_name["email_delivery"]["n"] == 1000  # one notification per child, sent by two workers over SMTP
    assert re.search(r"# email_delivery: 1,000 e-mails in [\d.]+ s by 2 worker processes \([\d,]+/s\)", done.stderr)
    # the inbound cases count too: 9,000 generated, 1,000 children, their major case, 1,000 by e-mail
    assert by_name["list_view"]["n"] == 11_001
    assert by_name["row_rule_list"]["n"] == by_name["portal_list"]["n"] == by_name["stats_group_by"]["n"] == 11_001
    assert "(count by state, priority); its GROUP BY by the plain driver" in done.stderr
    assert by_name["dashboard_view"]["n"] == 11_001
    assert "# dashboard_view: 'support_manager' with 6 reports, median " in done.stderr
    assert by_name["export_csv"]["n"] == 11_001  # the whole list, every row
    assert re.search(r"# export_csv: 11,001 records, \d+ MB of CSV in [\d.]+ s \([\d,]+ rows/s\), the worker's "
                     r"peak memory \d+ MB", done.stderr)
    assert f"# machine: {lines[0]['machine']}" in done.stderr.splitlines()
    # the progress notes go to stderr, so stdout stays machine-readable
    assert "# create_child_cases: 1,000 in" in done.stderr


def test_bench_on_sqlite_prints_one_json_line_per_benchmark():
    check_lines(run_bench())


@pytest.mark.skipif(not POSTGRES_URL, reason="CASELOOM_TEST_POSTGRES_URL is not set")
def test_bench_on_postgresql_prints_one_json_line_per_benchmark():
    done = run_bench("--database", POSTGRES_URL)
    # PostgreSQL slices the create job: two worker processes share it, against one (each on a copy)
    names = [*BENCHMARKS[:3], "create_child_cases_2_workers", *BENCHMARKS[3:]]
    check_lines(done, names, "PostgreSQL")
    two = next(json.loads(line) for line in done.stdout.splitlines() if "_2_workers" in line)
    assert two["n"] == 1000
    assert re.search(r"# create_child_cases_2_workers: 1,000 in [\d.]+ s with two worker processes, [\d.]+ s with "
                     r"one \(speed-up [\d.]+\); peak memory per worker \d+ MB \(one worker: \d+ MB\); "
                     r"slices of 250; medians of 3 runs each way, alternating \(two workers [\d.]+, [\d.]+, [\d.]+; "
                     r"one [\d.]+, [\d.]+, [\d.]+\)", done.stderr), done.stderr


WRITES = ["recipients_condition", "create_child_cases", "sla_attach", "sync_children", "close_major_case", "sla_repair"]


@pytest.mark.parametrize("database", ["SQLite", pytest.param("PostgreSQL", marks=pytest.mark.skipif(
    not POSTGRES_URL, reason="CASELOOM_TEST_POSTGRES_URL is not set"))])
def test_bench_writes_runs_the_write_benchmarks_on_the_data_they_need(database):
    """`--writes` (implied above the default scale, as `--scale 1000000` runs it): the write benchmarks
    alone, on the member list's accounts and the contacts they reference; no generated case."""
    done = run_bench("--writes", *(["--database", POSTGRES_URL] if database == "PostgreSQL" else []))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.left == []
    names = [*WRITES[:3], "create_child_cases_2_workers", *WRITES[3:]] if database == "PostgreSQL" else WRITES
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["name"] for line in lines] == names
    by_name = {line["name"]: line for line in lines}
    assert by_name["recipients_condition"]["n"] == 10_000  # the condition still runs over every account
    assert by_name["create_child_cases"]["n"] == by_name["sync_children"]["n"] == by_name["close_major_case"]["n"] == 1000
    for line in lines:
        assert line["seconds"] > 0 and line["baseline_seconds"] > 0, line
    assert "(the write benchmarks only)" in done.stderr.splitlines()[0]
    # 10,000 accounts and 1,000 contacts; the 9,000 cases of the page benchmarks are not generated
    assert re.search(rf"# setup: 11,000 rows generated on {database} in [\d.]+ s", done.stderr), done.stderr


def test_the_bench_data_sorts_by_sys_id_in_the_order_it_is_written():
    """The bench's generated rows get ascending sys_ids, as records the platform creates do, and a
    reference points at its row's; the demo keeps the hashed sys_ids definitions may name."""
    import datetime as dt

    from caseloom.definitions.model import DemoGenerator
    from caseloom.demo import demo_sys_id, generated_rows, ordered_sys_id
    from caseloom.records import new_sys_id

    counts = {"contacts": 30, "accounts": 300}
    contacts = DemoGenerator("contacts", "customer_contact", {"name": "Contact {i}"})
    accounts = DemoGenerator("accounts", "customer_account", {"name": "Account {i}",
                                                               "primary_contact": {"ref": "contacts", "every": 10}})
    stamp = dt.datetime(2026, 12, 5)
    written = {g.name: list(generated_rows(g, counts, {}, stamp, ordered_sys_id)) for g in (contacts, accounts)}
    for rows in written.values():
        ids = [r["sys_id"] for r in rows]
        assert ids == sorted(ids) and len(set(ids)) == len(ids) and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    newest = max(i for rows in written.values() for i in (r["sys_id"] for r in rows))
    assert newest < new_sys_id()  # written before anything the platform writes now, as old data is
    contact_ids = [r["sys_id"] for r in written["contacts"]]
    assert [r["primary_contact"] for r in written["accounts"]] == [contact_ids[i // 10] for i in range(300)]
    demo = list(generated_rows(contacts, counts, {}, stamp))
    assert demo[0]["sys_id"] == demo_sys_id("contacts", 0) == "edc878c8678f429dd0e18920ba5916d1"
