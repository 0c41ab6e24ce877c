"""`caseloom serve`: gunicorn with several processes on one database behaves as one server.

The real command runs in its own process on a copy of the test database (SQLite, and PostgreSQL when
set), started once for each kind of gunicorn worker and database and shared by the tests, which talk
to it over HTTP: sessions, numbering and jobs are shared through the database, a graceful restart
(SIGHUP) drops no request, and static files are linked by their content and cached for a year."""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import http.client
import http.cookiejar
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from caseloom.config import Config
from conftest import BACKENDS, database_copy, free_port
from test_job_recovery import environment, family


@dataclasses.dataclass(frozen=True)
class Served:
    port: int
    base: str  # http://127.0.0.1:PORT
    process: subprocess.Popen
    env: dict  # the server's environment: a second command on the same instance folder and database
    folder: Path  # its working directory; the instance folder is `instance` in it


@pytest.fixture(scope="module", params=BACKENDS)
def served_database(request, templates, tmp_path_factory):
    """A copy of the test database for the servers of this file on one backend, and its folder."""
    folder = tmp_path_factory.mktemp("served")
    for url in database_copy(templates, request.param, folder, "caseloom"):
        yield url, folder


@pytest.fixture(scope="module", params=[1, 2], ids=["sync", "gthread"])
def served(served_database, request):
    """`caseloom serve --workers 2 --threads N` with each kind of gunicorn worker (one thread: `sync`, the
    default; two: `gthread`), started once per kind and database and shared by the tests that take it, in
    their order: each leaves it serving (a graceful restart included), and none needs a database of its
    own (the numbers they check are those their own requests were given)."""
    url, parent = served_database
    folder = parent / f"threads-{request.param}"
    folder.mkdir()
    port = free_port()
    env = environment(Config(database_url=url, queue=f"sqlite:///{folder / 'queue.db'}"), folder)
    log = open(folder / "serve.log", "w")  # noqa: SIM115  (closed below)
    process = subprocess.Popen([sys.executable, "-m", "caseloom.cli", "serve", "--port", str(port), "--workers", "2",
                                "--threads", str(request.param)], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(base + "/login", timeout=2).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                log.close()
                pytest.fail("the server did not start:\n" + (folder / "serve.log").read_text())
            time.sleep(0.2)
    yield Served(port, base, process, env, folder)
    stop(process)
    log.close()


def stop(process: subprocess.Popen) -> None:
    """SIGTERM (gunicorn's graceful stop), then kill what is left after 40 s."""
    process.terminate()
    try:
        process.wait(timeout=40)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def basic(user: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{user}".encode()).decode()}


def call(method: str, url: str, body: dict | None = None, headers: dict | None = None) -> tuple[int, dict, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, method=method, data=data,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, dict(answer.headers), json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read() or b"{}")


def test_two_server_processes_answer_and_number_as_one(served):
    base, process = served.base, served.process
    assert len(family(process.pid)) >= 4  # the master, two server processes and the queue's worker

    def create(i: int) -> str:
        status, _, body = call("POST", f"{base}/api/now/table/sn_customerservice_case",
                               {"short_description": f"Printer {i} is on fire"}, basic("agent"))
        assert status == 201, body
        return body["result"]["number"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        numbers = list(pool.map(create, range(40)))
    assert len(set(numbers)) == 40  # no number given twice across processes
    values = sorted(int(re.sub(r"\D", "", n)) for n in numbers)
    assert values == list(range(values[0], values[0] + 40))  # and none skipped


def test_a_session_signed_in_on_one_process_is_known_to_the_other(served):
    base = served.base
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(f"{base}/login", timeout=30).read().decode()
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)[1]
    form = urllib.parse.urlencode({"csrf_token": token, "user_name": "agent", "user_password": "agent"}).encode()
    opener.open(urllib.request.Request(f"{base}/login", data=form), timeout=30).read()
    for _ in range(30):  # keep-alive off: each request is a new connection, to either process
        request = urllib.request.Request(f"{base}/sn_customerservice_case_list.do", headers={"Connection": "close"})
        with opener.open(request, timeout=30) as answer:
            assert answer.status == 200 and answer.url.endswith("_list.do"), answer.url  # not sent to /login


def test_a_graceful_restart_drops_no_request(served):
    base, process = served.base, served.process
    failures, done = [], []

    def ask(i: int) -> None:
        status, _, _ = call("GET", f"{base}/api/now/table/sn_customerservice_case?sysparm_limit=5", headers=basic("agent"))
        (done if status == 200 else failures).append(status)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(ask, i) for i in range(20)]
        process.send_signal(signal.SIGHUP)  # gunicorn replaces its processes one by one
        futures += [pool.submit(ask, i) for i in range(20, 80)]
        for future in futures:
            future.result()
    assert failures == [] and len(done) == 80


def test_a_long_encoded_query_fits_the_request_line_and_a_longer_one_is_a_414(served):
    """A GET of 7,100 bytes (a query of 700 numbers) is answered; one past 8,190 bytes is refused by the
    server before the app (gunicorn's default was 4,094 bytes), in the API's error shape."""
    base = served.base
    path = "/api/now/table/sn_customerservice_case?sysparm_fields=number&sysparm_query=numberIN"
    fits = path + ",".join(f"CS{i:07d}" for i in range(700))
    assert 7_000 < len(f"GET {fits} HTTP/1.1") < 8_190
    status, _, body = call("GET", base + fits, headers=basic("agent"))
    assert status == 200 and isinstance(body["result"], list)
    too_long = path + ",".join(f"CS{i:07d}" for i in range(900))
    try:
        urllib.request.urlopen(urllib.request.Request(base + too_long, headers=basic("agent")), timeout=30)
        raise AssertionError("a request line past 8,190 bytes was answered")
    except urllib.error.HTTPError as error:
        assert error.code == 414
        assert error.headers["Content-Type"] == "application/json"
        body = json.loads(error.read())
    assert body["status"] == "failure"
    assert body["error"]["message"] == "The request line is too long"
    assert "at most 8,190 bytes" in body["error"]["detail"], body


@pytest.mark.parametrize("headers, detail", [
    ({f"X-Extra-{i}": "1" for i in range(101)}, "limit request headers fields"),
    ({"X-Large": "x" * 9000}, "limit request headers fields size"),
], ids=["too many", "too large"])
def test_headers_past_the_servers_limits_are_a_431_in_the_api_error_shape(served, headers, detail):
    """More than 100 header fields, or one past 8,190 bytes: refused before the app, as JSON."""
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    try:
        conn.request("GET", "/api/now/table/sn_customerservice_case?sysparm_limit=1", headers=headers)
        response = conn.getresponse()
        assert response.status == 431
        assert response.getheader("Content-Type") == "application/json"
        body = json.loads(response.read())
    finally:
        conn.close()
    assert body["status"] == "failure" and body["error"]["message"] == "The request's headers are too large"
    assert detail in body["error"]["detail"].lower(), body


def test_static_files_are_linked_by_their_content_and_cached_for_a_year(served):
    base = served.base
    page = urllib.request.urlopen(f"{base}/login", timeout=30).read().decode()
    css = re.search(r'href="(/static/caseloom\.css\?v=([0-9a-f]{12}))"', page)
    assert css, page[:2000]
    with urllib.request.urlopen(base + css[1], timeout=30) as answer:
        assert answer.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        body = answer.read()
    import hashlib

    assert hashlib.sha256(body).hexdigest()[:12] == css[2]  # a new file gets a new address
    with urllib.request.urlopen(f"{base}/static/caseloom.css", timeout=30) as answer:
        assert answer.headers["Cache-Control"] == "public, max-age=300"


def test_serve_dev_runs_flasks_server(config, tmp_path):
    port = free_port()
    env = environment(config, tmp_path)
    process = subprocess.Popen([sys.executable, "-m", "caseloom.cli", "serve", "--dev", "--port", str(port)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=2).close()
                break
            except OSError:
                time.sleep(0.2)
        assert family(process.pid) == {process.pid}  # one process: jobs run in its threads
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=30)
    assert "background jobs: run in this process" in out
    assert "development server" in out.lower()


def _job_workers(server_pid: int) -> set[int]:
    """The server's `caseloom worker` processes: its descendants whose command line says worker."""
    found = set()
    for pid in family(server_pid) - {server_pid}:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"caseloom.cli" in command and b"worker" in command:
            found.add(pid)
    return found


def test_the_servers_job_worker_is_started_again_when_it_dies(config, tmp_path):
    """kill -9 of the embedded queue's worker left every job waiting, running, with no worker: the
    server now starts another, and says so in its log."""
    port = free_port()
    env = environment(config, tmp_path)
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115  (closed below)
    process = subprocess.Popen([sys.executable, "-m", "caseloom.cli", "serve", "--port", str(port), "--workers", "1"],
                               env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not _job_workers(process.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        [first] = _job_workers(process.pid)
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not (_job_workers(process.pid) - {first}):
            time.sleep(0.2)
        assert _job_workers(process.pid) - {first}, (tmp_path / "serve.log").read_text()
        assert f"the server's job worker (pid {first}) has stopped; starting another" in \
            (tmp_path / "serve.log").read_text()
    finally:
        stop(process)
        log.close()
    assert not _job_workers(process.pid)


@pytest.mark.parametrize("clash", ["port", "instance folder"])
def test_a_second_server_on_its_port_or_its_instance_folder_says_so_and_touches_nothing(served, clash):
    """A second `caseloom serve` with the same instance folder on another port emptied the first one's
    metrics folder: the first server's counts were lost. It now finds the folder locked, says so in
    one line and exits 1, leaving the files alone."""
    base, port = served.base, served.port
    metrics = (served.folder / "instance").resolve() / "metrics"
    call("GET", base + "/health")
    counted = {path.name for path in metrics.glob("*.db")}
    assert counted  # the first server's processes count into files there
    other = port if clash == "port" else free_port()
    ran = subprocess.run([sys.executable, "-m", "caseloom.cli", "serve", "--port", str(other)], env=served.env,
                         capture_output=True, text=True, cwd=served.folder, timeout=60)
    assert ran.returncode == 1
    said = {"port": f"caseloom serve: port {port} on 127.0.0.1 is in use (another server?); give another --port",
            "instance folder": f"caseloom serve: {metrics} is used by another `caseloom serve` (its metrics); stop "
                               "that server, or give this one another instance folder (CASELOOM_INSTANCE)"}[clash]
    assert ran.stderr.strip().splitlines()[-1] == said, ran.stderr
    assert counted <= {path.name for path in metrics.glob("*.db")}
    status, _, _ = call("GET", base + "/health")
    assert status == 200


HOLD = """import sys, time
from caseloom.serving import MetricsFolderInUse, prepare_metrics
try:
    folder = prepare_metrics(sys.argv[1])
except MetricsFolderInUse as exc:
    sys.exit(str(exc))
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_the_metrics_folders_lock_goes_with_its_server_even_when_killed(tmp_path):
    """The lock is the system's (flock): a server killed with -9 leaves nothing that stops the next."""
    metrics = tmp_path.resolve() / "metrics"
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), "120"], env=env, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        (metrics / "counter_1.db").write_bytes(b"")  # the holder's counts
        second = subprocess.run([sys.executable, "-c", HOLD, str(tmp_path), "0"], env=env, capture_output=True,
                                text=True, timeout=60)
        assert second.returncode == 1
        assert second.stderr.strip() == (f"{metrics} is used by another `caseloom serve` (its metrics); stop that "
                                         "server, or give this one another instance folder (CASELOOM_INSTANCE)")
        assert (metrics / "counter_1.db").exists()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    third = subprocess.run([sys.executable, "-c", HOLD, str(tmp_path), "0"], env=env, capture_output=True,
                           text=True, timeout=60)
    assert third.returncode == 0 and third.stdout.strip() == "held", third.stderr
    assert not (metrics / "counter_1.db").exists()  # a new start empties the folder
