"""A bounded load and soak test of a whole Caseloom system, on loopback only.

    .venv/bin/python loadtest/soak.py --minutes 10 [--database postgresql+psycopg://...] [--redis redis://...]

It builds a scratch system and drives it with a realistic mix, then reports:

- the system: a scratch database (a SQLite file, or a database it creates on the PostgreSQL server
  given and drops at the end) with the demo data at `--scale`, `caseloom serve --workers 2` (one
  thread each, its default; `--threads N` for more), `caseloom worker` processes on the queue (the
  SQLite file, or the Redis given), and a local SMTP server (aiosmtpd) that accepts every message;
- the mix, for `--minutes`: agents browsing case lists (a filter, a page, a sort) and forms, and saving
  a case (the Table API's PATCH, as the form's save does); API clients reading and creating cases; and,
  at the start, a major case's child-creation job over a recipients list of `--children` new accounts,
  whose children and e-mails the workers make and send while the rest goes on;
- the report (JSON on stdout, a summary on stderr): requests by kind with their latency percentiles
  (p50, p95, p99, max) and errors (any status >= 500, a refused connection, a timeout; a 4xx the mix
  does not expect), the job's duration, e-mails delivered, and the resident memory of every server and
  worker process sampled every 10 s: at the end of the first minute, at the end, and the largest.
  Memory is *flat* when no process grew by more than 15 % from the end of its first minute to the end.

Memory is judged only from the samples taken after the first minute: a run too short to have two of
them for any process (under about 80 s) reports `"memory_flat": null` and says so. Exit 0 when there
was no error and memory was flat or not judged, 1 otherwise. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASE = "sn_customerservice_case"
GROWTH = 1.15  # a process whose memory grew by more than this after its first minute is not flat


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--database", help="a PostgreSQL server URL (default: a SQLite file)")
    parser.add_argument("--redis", help="a Redis URL for the queue (default: a SQLite file)")
    parser.add_argument("--scale", type=int, default=2000, help="demo scale of the scratch database")
    parser.add_argument("--children", type=int, default=20000, help="accounts of the major case's recipients list")
    parser.add_argument("--agents", type=int, default=6, help="browsing agents")
    parser.add_argument("--clients", type=int, default=3, help="API clients")
    parser.add_argument("--workers", type=int, default=2, help="`caseloom worker` processes")
    parser.add_argument("--threads", type=int, default=1, help="threads of each `caseloom serve` process")
    args = parser.parse_args()
    with System(args) as system:
        report = Mix(system, args).run()
    print(json.dumps(report, indent=2))
    summary(report)
    return 0 if report["errors"] == 0 and report["memory_flat"] is not False else 1


# -- the system -------------------------------------------------------------------------------------

class System:
    """A scratch database, a server, workers and an SMTP sink, all on loopback; gone at the end."""

    def __init__(self, args):
        self.args = args
        self.folder = Path(tempfile.mkdtemp(prefix="caseloom-soak-"))
        self.processes: list[subprocess.Popen] = []
        self.pg_name = None

    def __enter__(self) -> System:
        args = self.args
        if args.database:
            import sqlalchemy as sa

            self.pg_name = f"caseloom_soak_{os.getpid()}"
            self.admin = sa.create_engine(args.database, isolation_level="AUTOCOMMIT")
            with self.admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')
                conn.exec_driver_sql(f'CREATE DATABASE "{self.pg_name}"')
            url = sa.engine.make_url(args.database).set(database=self.pg_name).render_as_string(hide_password=False)
        else:
            url = f"sqlite:///{self.folder / 'caseloom.db'}"
        self.smtp = self._smtp()
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "CASELOOM_DATABASE_URL": url, "CASELOOM_DEFINITIONS": str(ROOT / "definitions"),
                    "CASELOOM_SCRIPTS": str(ROOT / "scripts"), "CASELOOM_UI": str(ROOT / "ui"),
                    "CASELOOM_INSTANCE": str(self.folder / "instance"), "CASELOOM_SECRET_KEY": secrets.token_hex(16),
                    "CASELOOM_QUEUE": args.redis or f"sqlite:///{self.folder / 'queue.db'}",
                    "CASELOOM_SMTP_HOST": "127.0.0.1", "CASELOOM_SMTP_PORT": str(self.smtp.port),
                    "CASELOOM_SMTP_STARTTLS": "false", "CASELOOM_LOG_FORMAT": "json"}
        if args.redis:
            import redis

            redis.Redis.from_url(args.redis).flushdb()
        say(f"initialising {url.split('@')[-1]} at demo scale {args.scale}")
        self._run("init", "--demo", "--scale", str(args.scale))
        self.major = self._major(args.children)
        self.server = self._start("serve", "--port", str(self.port), "--workers", "2", "--threads", str(args.threads))
        if args.redis:
            self.workers = [self._start("worker", "--workers", "2") for _ in range(args.workers)]
        else:
            self.workers = []  # the server's own worker process runs the embedded queue
        _wait_for(lambda: _get(self.base + "/health")[0] in (200, 503), 90)
        return self

    def __exit__(self, *exc) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT if process in self.workers else signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        self.smtp.stop()
        if self.pg_name:
            with self.admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')
            self.admin.dispose()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self, *command: str) -> None:
        done = subprocess.run([sys.executable, "-m", "caseloom.cli", *command], env=self.env, cwd=self.folder,
                              capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"caseloom {' '.join(command)} failed:\n{done.stderr[-3000:]}")

    def _start(self, *command: str) -> subprocess.Popen:
        log = open(self.folder / f"{command[0]}-{len(self.processes)}.log", "w")  # noqa: SIM115
        process = subprocess.Popen([sys.executable, "-m", "caseloom.cli", *command], env=self.env, cwd=self.folder,
                                   stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def _major(self, n: int) -> str:
        """An accepted major case whose recipients list holds `n` new accounts with a contact each."""
        from caseloom.actions import run_action
        from caseloom.config import Config
        from caseloom.memberlists import lists_for
        from caseloom.runtime import Runtime

        os.environ.update({k: v for k, v in self.env.items() if k.startswith("CASELOOM_")})
        runtime = Runtime(Config.from_env())
        try:
            with runtime.transaction() as service, service.deferred_references():
                ids = [secrets.token_hex(16) for _ in range(2 * n)]
                accounts, contacts = ids[:n], ids[n:]
                service.insert_many("customer_account", ({"sys_id": a, "name": f"Soak {i}", "country": "SK",
                                                          "primary_contact": c}
                                                         for i, (a, c) in enumerate(zip(accounts, contacts, strict=True))))
                service.insert_many("customer_contact", ({"sys_id": c, "name": f"Soak contact {i}", "account": a,
                                                          "email": f"contact{i}@soak.example"}
                                                         for i, (a, c) in enumerate(zip(accounts, contacts, strict=True))))
            with runtime.transaction() as service:
                list_id = service.insert("sn_publications_recipients_list",
                                         {"name": "Soak", "type": "accounts", "conditions": "country=SK"})["sys_id"]
            with runtime.transaction() as service:
                lists_for(service, "sn_publications_recipients_list").refresh(list_id)
                major = service.insert(CASE, {"short_description": "Soak outage", "state": 10,
                                              "major_case_state": "proposed", "recipient_list": list_id})["sys_id"]
                run_action(service, CASE, major, "accept_major_case", {})
            return major
        finally:
            runtime.engine.dispose()

    def _smtp(self):
        from aiosmtpd.controller import Controller

        class Sink:
            received = 0

            async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
                Sink.received += 1
                return "250 OK"

        controller = Controller(Sink(), hostname="127.0.0.1", port=_free_port())
        controller.start()
        controller.sink = Sink
        return controller

    def family(self) -> dict[int, str]:
        """Every server and worker process now: pid -> what it is."""
        found = {}
        parents = _parents()
        for process in self.processes:
            kind = "worker" if process in self.workers else "server"
            for pid in _descendants(process.pid, parents):
                found[pid] = f"{kind} master" if pid == process.pid and kind == "server" else kind
        return found


# -- the mix ----------------------------------------------------------------------------------------

class Mix:
    def __init__(self, system: System, args):
        self.system, self.args = system, args
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, list[str]] = defaultdict(list)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.memory: dict[int, list[tuple[float, int, str]]] = defaultdict(list)
        self.case_ids: list[str] = []

    def run(self) -> dict:
        base = self.system.base
        status, body = _get(f"{base}/api/now/table/{CASE}?sysparm_limit=200&sysparm_fields=sys_id", "agent")
        self.case_ids = [r["sys_id"] for r in body["result"]]
        started = time.monotonic()
        status, body = _call("POST", f"{base}/api/caseloom/actions/{CASE}/{self.system.major}/create_child_cases",
                             "mim", {"comments": "We are working on it"})
        if status != 202:
            raise SystemExit(f"could not start the child-creation job: {status} {body}")
        job = body["result"]["job"]
        threads = [threading.Thread(target=self.agent, args=(i,), daemon=True) for i in range(self.args.agents)]
        threads += [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(self.args.clients)]
        threads.append(threading.Thread(target=self.sample, daemon=True))
        for thread in threads:
            thread.start()
        job_seconds = None
        deadline = started + self.args.minutes * 60
        while time.monotonic() < deadline:
            if job_seconds is None:
                status, body = _get(f"{base}/api/caseloom/jobs/{job}", "mim")
                if status == 200 and body["result"]["state"] in ("done", "failed", "canceled"):
                    job_seconds = time.monotonic() - started
                    self.job_state = body["result"]
            time.sleep(1)
        self.stop.set()
        for thread in threads:
            thread.join(timeout=60)
        return self.report(job_seconds)

    def timed(self, kind: str, method: str, path: str, user: str, body: dict | None = None,
              expect: tuple[int, ...] = (200,)) -> dict | None:
        began = time.perf_counter()
        try:
            status, answer = _call(method, self.system.base + path, user, body)
        except OSError as exc:
            status, answer = None, {"error": str(exc)}
        elapsed = time.perf_counter() - began
        with self.lock:
            self.latency[kind].append(elapsed)
            if status not in expect:
                self.errors[kind].append(f"{status}: {str(answer)[:200]}")
        return answer if status in expect else None

    def agent(self, i: int) -> None:
        rnd = random.Random(i)
        filters = ["active=true", "priority=1", "state=1^ORDERBYDESCsys_created_on", "short_descriptionLIKEprinter",
                   "parent=" + self.system.major]
        while not self.stop.is_set():
            query = rnd.choice(filters)
            self.timed("list page", "GET", f"/{CASE}_list.do?sysparm_query={_q(query)}"
                                           f"&sysparm_first_row={rnd.choice([1, 21, 41])}", "agent")
            case = rnd.choice(self.case_ids)
            self.timed("form page", "GET", f"/{CASE}.do?sys_id={case}", "agent")
            if rnd.random() < 0.3:
                self.timed("save", "PATCH", f"/api/now/table/{CASE}/{case}", "agent",
                           {"work_notes": f"soak note {rnd.random():.6f}"})
            time.sleep(rnd.uniform(0.2, 1.0))

    def client(self, i: int) -> None:
        rnd = random.Random(100 + i)
        while not self.stop.is_set():
            self.timed("api get", "GET", f"/api/now/table/{CASE}?sysparm_limit=20&sysparm_query=active=true"
                                         f"&sysparm_offset={rnd.randrange(0, 200)}", "agent")
            self.timed("api get one", "GET", f"/api/now/table/{CASE}/{rnd.choice(self.case_ids)}", "agent")
            if rnd.random() < 0.2:
                created = self.timed("api create", "POST", f"/api/now/table/{CASE}", "agent",
                                     {"short_description": f"Soak printer {rnd.random():.6f} is jammed"}, (201,))
                if created:
                    with self.lock:
                        self.case_ids.append(created["result"]["sys_id"])
            time.sleep(rnd.uniform(0.1, 0.5))

    def sample(self) -> None:
        t0 = time.monotonic()
        while not self.stop.wait(10 if self.memory else 0.5):
            now = time.monotonic() - t0
            for pid, kind in self.system.family().items():
                rss = _rss_kb(pid)
                if rss:
                    self.memory[pid].append((now, rss, kind))

    def report(self, job_seconds: float | None) -> dict:
        kinds = {}
        for kind, values in sorted(self.latency.items()):
            ordered = sorted(values)
            kinds[kind] = {"requests": len(values), "errors": len(self.errors.get(kind, [])),
                           "p50_ms": _pct(ordered, 50), "p95_ms": _pct(ordered, 95), "p99_ms": _pct(ordered, 99),
                           "max_ms": round(ordered[-1] * 1000, 1), "mean_ms": round(statistics.fmean(values) * 1000, 1)}
        memory, growths = {}, []
        for pid, samples in sorted(self.memory.items()):
            after_a_minute = [rss for t, rss, _ in samples if t >= 60]
            if len(after_a_minute) < 2:
                continue
            first, last, peak = after_a_minute[0], after_a_minute[-1], max(rss for _, rss, _ in samples)
            grew = last / first
            growths.append(grew)
            memory[str(pid)] = {"kind": samples[0][2], "after_1_min_mb": round(first / 1024, 1),
                                "end_mb": round(last / 1024, 1), "peak_mb": round(peak / 1024, 1),
                                "growth": round(grew, 3)}
        # None: no process was sampled twice after its first minute, nothing to judge
        flat = all(grew <= GROWTH for grew in growths) if growths else None
        job = getattr(self, "job_state", None)
        if job and job["state"] != "done":  # the job the mix started is part of the load: its failure is an error
            self.errors["child-creation job"].append(f"{job['state']}: {str(job)[:200]}")
        errors = sum(len(v) for v in self.errors.values())
        return {"minutes": self.args.minutes, "database": "postgresql" if self.args.database else "sqlite",
                "queue": "redis" if self.args.redis else "sqlite", "requests": sum(len(v) for v in self.latency.values()),
                "errors": errors, "error_samples": {k: v[:5] for k, v in self.errors.items()},
                "by_kind": kinds, "job": job,
                "job_seconds": round(job_seconds, 1) if job_seconds else None,
                "emails_delivered": self.system.smtp.sink.received, "memory": memory, "memory_flat": flat}


# -- helpers ----------------------------------------------------------------------------------------

def _auth(user: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{user}".encode()).decode()


def _call(method: str, url: str, user: str | None = None, body: dict | None = None) -> tuple[int, dict]:
    headers = {"Accept": "application/json"}
    if user:
        headers["Authorization"] = _auth(user)
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            raw = answer.read()
            return answer.status, _json(raw)
    except urllib.error.HTTPError as error:
        return error.code, _json(error.read())


def _json(raw: bytes) -> dict:
    try:
        return json.loads(raw or b"{}")
    except ValueError:
        return {"html": len(raw)}


def _get(url: str, user: str | None = None) -> tuple[int, dict]:
    try:
        return _call("GET", url, user)
    except OSError:
        return 0, {}


def _q(text: str) -> str:
    return urllib.parse.quote(text, safe="=^")


def _pct(ordered: list[float], p: int) -> float:
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] * 1000, 1)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(check, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise SystemExit("the system did not come up")


def _parents() -> dict[int, int]:
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            out[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return out


def _descendants(pid: int, parents: dict[int, int]) -> set[int]:
    found, grew = {pid}, True
    while grew:
        more = {c for c, p in parents.items() if p in found} - found
        found |= more
        grew = bool(more)
    return {p for p in found if _is_caseloom(p)}


def _is_caseloom(pid: int) -> bool:
    try:
        return "caseloom" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def say(text: str) -> None:
    print(f"# {text}", file=sys.stderr, flush=True)


def summary(report: dict) -> None:
    say(f"{report['requests']:,} requests in {report['minutes']} min on {report['database']} with a "
        f"{report['queue']} queue: {report['errors']} errors")
    for kind, k in report["by_kind"].items():
        say(f"  {kind:<12} {k['requests']:>7,}  p50 {k['p50_ms']:>7} ms  p95 {k['p95_ms']:>7} ms  "
            f"p99 {k['p99_ms']:>7} ms  max {k['max_ms']:>8} ms  errors {k['errors']}")
    job = report.get("job") or {}
    say(f"  child-creation job: {job.get('state')} {job.get('done')} of {job.get('total')} in "
        f"{report['job_seconds']} s; e-mails delivered {report['emails_delivered']:,}")
    for pid, m in report["memory"].items():
        say(f"  {m['kind']:<14} pid {pid}: {m['after_1_min_mb']} MB after 1 min, {m['end_mb']} MB at the end, "
            f"peak {m['peak_mb']} MB (x{m['growth']})")
    if report["memory_flat"] is None:
        say("memory not judged: the run was too short to sample any process twice after its first minute")
    else:
        say("memory flat" if report["memory_flat"] else f"memory NOT flat (a process grew by more than {GROWTH - 1:.0%})")


if __name__ == "__main__":
    sys.exit(main())
