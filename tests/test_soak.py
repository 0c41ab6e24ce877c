"""The load and soak test, `loadtest/soak.py`, run end to end and briefly: a scratch system (server,
workers, SMTP sink), agents and API clients for half a minute while a child-creation job and its
e-mails run, and the report the README describes. On SQLite with its embedded queue, and on PostgreSQL
with a Redis queue and two `caseloom worker`s where the suite has them. Tens of seconds each (marked
slow): CI runs them, `pytest -m "not slow"` skips them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get("CASELOOM_TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("CASELOOM_TEST_REDIS_URL")
CHILDREN = 300
KINDS = {"list page", "form page", "api get", "api get one"}


def soak(*extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "loadtest" / "soak.py"), "--minutes", "0.5", "--scale", "20",
               "--children", str(CHILDREN), "--agents", "2", "--clients", "2", *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)


def redis_database() -> str:
    """A Redis database of this file's own (1 to 15), which the soak test empties first."""
    return f"{REDIS_URL.rsplit('/', 1)[0]}/{zlib.crc32(__name__.encode()) % 15 + 1}"


SYSTEMS = [
    pytest.param(lambda: [], "sqlite", "sqlite", id="sqlite"),
    pytest.param(lambda: ["--database", POSTGRES_URL, "--redis", redis_database(), "--workers", "2"],
                 "postgresql", "redis", id="postgresql-redis",
                 marks=pytest.mark.skipif(not (POSTGRES_URL and REDIS_URL),
                                          reason="set CASELOOM_TEST_POSTGRES_URL and CASELOOM_TEST_REDIS_URL")),
]


@pytest.mark.slow
@pytest.mark.parametrize(("arguments", "database", "queue"), SYSTEMS)
def test_a_short_soak_answers_every_request_and_finishes_its_job(arguments, database, queue):
    done = soak(*arguments())
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout)
    assert (report["database"], report["queue"], report["minutes"]) == (database, queue, 0.5)
    assert report["errors"] == 0, report["error_samples"]
    assert KINDS <= set(report["by_kind"]), report["by_kind"]
    for kind, figures in report["by_kind"].items():
        assert figures["requests"] > 0 and figures["errors"] == 0, kind
        assert 0 < figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"] <= figures["max_ms"], kind
    assert sum(k["requests"] for k in report["by_kind"].values()) == report["requests"]
    # the job the mix started made one child per member, and every child's e-mail reached the SMTP server
    assert report["job"]["state"] == "done", report["job"]
    assert report["job"]["done"] == report["job"]["total"] == CHILDREN
    assert 0 < report["job_seconds"] <= 30
    assert report["emails_delivered"] == CHILDREN
    # half a minute gives no process two samples after its first minute: memory is not judged, and says so
    assert report["memory_flat"] is None and report["memory"] == {}
    assert "memory not judged" in done.stderr
    assert f"{report['requests']:,} requests in 0.5 min on {database} with a {queue} queue: 0 errors" in done.stderr


@pytest.mark.slow
def test_a_bad_argument_is_refused_before_anything_starts():
    done = subprocess.run([sys.executable, str(ROOT / "loadtest" / "soak.py"), "--minutes", "soon"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 2
    assert "argument --minutes: invalid float value: 'soon'" in done.stderr
