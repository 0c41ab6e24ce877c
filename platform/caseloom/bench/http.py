"""The page and API benchmarks: a real server (gunicorn, two workers) on loopback, timed from
outside; the baseline replays, with the plain driver, the SQL the same request ran in-process."""

from __future__ import annotations

import html
import http.client
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from urllib.parse import urlencode

import sqlalchemy as sa


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVE = [sys.executable, "-c", "from caseloom.cli import main; main()", "serve"]  # `caseloom serve`, this interpreter's


@contextmanager
def serve(env: dict[str, str], workers: int = 2):
    """`caseloom serve --workers N` (its production server: gunicorn, threads as it defaults) on a
    free loopback port; yields the port."""
    port = free_port()
    with _listening([*SERVE, "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)], env, port):
        yield port


@contextmanager
def gunicorn(env: dict[str, str], workers: int = 2, timeout: int = 30, started: list | None = None):
    """`caseloom`'s app under plain gunicorn (one sync worker process per request at a time) on a
    free loopback port; yields the port. `timeout`: seconds a request may take; `started` gets the
    master process appended (its workers are its children, and nothing else is)."""
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--bind", f"127.0.0.1:{port}",
               "--timeout", str(timeout), "--log-level", "warning", "caseloom.web:create_app()"]
    with _listening(command, env, port, started):
        yield port


@contextmanager
def _listening(command: list[str], env: dict[str, str], port: int, started: list | None = None):
    """Run `command` until it listens on `port`; stopped (SIGTERM: gracefully) at the end. Its
    output (the server's log: a line per request) goes to a file, as a deployment's goes to its
    journal, so it never waits on a full pipe."""
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
        if started is not None:
            started.append(process)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        said = log.read().decode(errors="replace")[-2000:]
                        raise RuntimeError(f"the server did not start ({' '.join(command[3:])}): {said}") from None
                    time.sleep(0.2)
            yield port
        finally:
            process.terminate()
            process.wait(timeout=30)


class Browser:
    """A signed-in browser session over one keep-alive connection."""

    def __init__(self, port: int, user: str, password: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.cookie = ""
        page = self.get("/login")
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
        body = urlencode({"user_name": user, "user_password": password, "csrf_token": token.group(1) if token else ""})
        self.conn.request("POST", "/login", body=body, headers={
            "Content-Type": "application/x-www-form-urlencoded", "Cookie": self.cookie})
        response = self.conn.getresponse()
        response.read()
        self._keep_cookie(response)
        if response.status not in (302, 303):
            raise RuntimeError(f"signing in as {user} failed: HTTP {response.status}")

    def get(self, path: str, headers: dict | None = None) -> str:
        """GET `path` over the kept-alive connection; one the server closed while it was idle (its
        keep-alive timeout) is opened again and the GET sent again, as a browser does."""
        sent = {"Cookie": self.cookie} if self.cookie else {}
        try:
            self.conn.request("GET", path, headers=sent | (headers or {}))
            response = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self.conn.close()
            self.conn.request("GET", path, headers=sent | (headers or {}))
            response = self.conn.getresponse()
        body = response.read().decode()
        self._keep_cookie(response)
        if response.status != 200:
            raise RuntimeError(f"GET {path}: HTTP {response.status}")
        return body

    def _keep_cookie(self, response) -> None:
        cookie = response.getheader("Set-Cookie")
        if cookie:
            self.cookie = cookie.split(";", 1)[0]

    def median(self, paths: list[str], warmup: int = 3) -> float:
        for path in paths[:warmup]:
            self.get(path)
        times = []
        for path in paths:
            started = time.perf_counter()
            self.get(path)
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    def median_visit(self, paths: list[str], times: int = 10, warmup: int = 3) -> float:
        """The median time of GETting `paths` one after the other (a page and the parts it draws after it,
        as a browser completes it), over `times` visits."""
        for _ in range(warmup):
            for path in paths:
                self.get(path)
        took = []
        for _ in range(times):
            started = time.perf_counter()
            for path in paths:
                self.get(path)
            took.append(time.perf_counter() - started)
        return statistics.median(took)


def drawn_after(page: str, under: str) -> list[str]:
    """The paths (starting with `under`) of the parts a page asks for as it loads (`hx-trigger="load"`)."""
    paths = (html.unescape(path) for path in re.findall(r'hx-get="([^"]+)" hx-trigger="load"', page))
    return [path for path in paths if path.startswith(under)]


def capture_sql(app, path: str, user: str, password: str) -> list[tuple[str, object]]:
    """The SQL statements (with their parameters) that one GET of `path` runs, in-process."""
    import base64

    from ..web import db

    statements: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):  # not BEGIN, COMMIT, SAVEPOINT
            statements.append((statement, parameters))

    with app.app_context():
        engine = db.engine
    app.config["WTF_CSRF_ENABLED"] = False  # an in-process copy of the app, signing in without a form
    client = app.test_client()
    auth = {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    if path.startswith("/api/"):
        client.get(path, headers=auth)  # warm: definitions generation, caches
    else:
        client.post("/login", data={"user_name": user, "user_password": password})
        client.get(path)
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        response = client.get(path, headers=auth if path.startswith("/api/") else {})
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    response.close()  # a streamed body is not read: its cursor is let go
    if response.status_code != 200:
        raise RuntimeError(f"GET {path} in-process: HTTP {response.status_code}")
    return statements


def download(port: int, path: str, user: str, password: str) -> tuple[int, float]:
    """GET `path` with HTTP Basic and read the whole body in pieces: (bytes, seconds)."""
    import base64

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    started = time.perf_counter()
    conn.request("GET", path, headers={"Authorization": f"Basic {token}"})
    response = conn.getresponse()
    size = 0
    while piece := response.read(1 << 16):
        size += len(piece)
    seconds = time.perf_counter() - started
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"GET {path}: HTTP {response.status}")
    return size, seconds


def replay_csv(conn, statements: list[tuple[str, object]]) -> float:
    """Seconds for the plain driver to run the same statements, fetching in batches of 2,000 and
    writing every row as CSV to nowhere (after one warm-up run)."""
    import csv
    import io

    times = []
    for _ in range(2):
        started = time.perf_counter()
        cur = conn.cursor()
        sink = io.StringIO()
        writer = csv.writer(sink)
        for statement, parameters in statements:
            cur.execute(statement, parameters)
            if cur.description is None:
                continue
            while rows := cur.fetchmany(2000):
                writer.writerows(rows)
                sink.seek(0)
                sink.truncate()
        cur.close()
        times.append(time.perf_counter() - started)
    return times[-1]


def replay_median(conn, statements: list[tuple[str, object]], rounds: int = 30) -> float:
    """Median time for the plain driver to run the same statements and fetch every row."""
    cur = conn.cursor()
    times = []
    for _ in range(rounds + 3):
        started = time.perf_counter()
        for statement, parameters in statements:
            cur.execute(statement, parameters)
            if cur.description is not None:
                cur.fetchall()
        times.append(time.perf_counter() - started)
    return statistics.median(times[3:])


def replay_paths(app, plain, paths: list[str], user: str, password: str, rounds: int = 10) -> tuple[float, list[int]]:
    """The plain driver's time for the statements of the requests a median was taken over: for each
    path (each distinct one captured and replayed once), the median of `rounds` replays; then the median
    of those over `paths`, as many times as each is there. With the statements each distinct path ran
    (how many). The baseline of one path alone times one page: the first of a table's records by key was,
    before the bench's rows were dated, the major case of 100,000 children (808 ms against 25)."""
    timed: dict[str, float] = {}
    counts: list[int] = []
    for path in dict.fromkeys(paths):
        sql = capture_sql(app, path, user, password)
        timed[path] = replay_median(plain, sql, rounds)
        counts.append(len(sql))
    return statistics.median(timed[path] for path in paths), counts


def statements_words(counts: list[int]) -> str:
    """How many statements the requests ran: "17", or "15 to 19" when they differ."""
    low, high = min(counts), max(counts)
    return f"{low}" if low == high else f"{low} to {high}"


def wrk(port: int, path: str, headers: dict[str, str], seconds: int = 10, connections: int = 8) -> dict:
    """Requests/s from wrk (Debian's package) on loopback; raises when wrk is missing or any
    request failed."""
    binary = shutil.which("wrk")
    if binary is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk); the API load benchmark needs it")
    command = [binary, "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    out = subprocess.run([*command, f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True,
                         check=True).stdout
    total = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    if failed or socket_errors:
        raise RuntimeError(f"the API load run had errors:\n{out}")
    duration = float(total.group(2)) / (1000 if total.group(3) == "ms" else 1)
    return {"requests": int(total.group(1)), "seconds": duration}

