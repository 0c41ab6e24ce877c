"""`caseloom bench`: the application's bench scenario (its `bench:` definition), run end to end
in a scratch database, each step beside a baseline doing the same database work the plainest way."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa

from ..access import SYSTEM
from ..actions import run_action
from ..bootstrap import initialise, refresh_statistics
from ..config import Config
from ..database import job_cache
from ..definitions.model import Definitions
from ..demo import generated_rows, generator_count, ordered_sys_id
from ..memberlists import lists_for
from ..properties import TABLE as PROPERTIES
from ..properties import render_value
from ..query import Query, Selection
from ..records import now
from ..runtime import Runtime
from ..users import actor_named, add_user
from . import http
from . import machine as where
from .database import ScratchDatabase
from .mail import email_delivery
from .memory import children, give_back, peak_rss, rss_bytes
from .replay import net_writes, replay
from .timing import has_slas, sla_attach, sla_repair, sla_tick
from .workers import workers_speedup

JOURNAL, AUDIT, TASK_SLA, EMAIL = "sys_journal_field", "sys_audit", "task_sla", "sys_email"
CUSTOMER = "bench_customer"  # the login of the access-rule benchmarks
DEFAULT_SCALE = 100_000  # the scale the read benchmarks' data is sized for; above it, the writes alone


@dataclass
class Result:
    name: str
    n: int
    seconds: float
    baseline_seconds: float
    notes: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        """The contract's line; the derived figures come from the rounded ones, so they agree."""
        seconds, baseline = round(self.seconds, 6), round(self.baseline_seconds, 6)
        return {"name": self.name, "n": self.n, "seconds": seconds,
                "per_second": round(self.n / seconds, 1) if seconds else None,
                "baseline_seconds": baseline, "ratio": round(seconds / baseline, 2) if baseline else None}


# The setup writes its rows in one transaction: on SQLite a page cache smaller than what it writes
# spills pages to the WAL before the commit, and every later read of such a page searches the WAL's
# index, which grows with it; the default scale's cases then went in at under 200 rows a second.
# Its connection keeps up to 4 GB of pages (allocated as used: about 2 GB at the default scale).
SETUP_CACHE_KB = 4_194_304


class BenchRun:
    """One run of the suite at one scale, on SQLite (default) or a PostgreSQL server."""

    def __init__(self, defs: Definitions, config: Config, scale: int, server_url: str | None,
                 say: Callable[[str], None], writes_only: bool = False):
        if defs.bench is None:
            raise ValueError("the definitions declare no `bench:` scenario (see the README, Performance)")
        self.defs, self.bench, self.scale, self.say = defs, defs.bench, scale, say
        self.writes_only = writes_only
        self.folder = Path(tempfile.mkdtemp(prefix="caseloom-bench-"))
        self.db = ScratchDatabase(self.folder, server_url)
        self.config = Config(database_url=self.db.url, definitions=config.definitions, scripts=config.scripts,
                             queue=f"sqlite:///{self.folder / 'queue.db'}", instance=str(self.folder),
                             ui=config.ui, secret_key=secrets.token_hex(16),
                             # at least four slices at any scale, so two workers always have work to share
                             job_slice_rows=min(config.job_slice_rows, max(100, scale // 4)))
        self.runtime = Runtime(self.config, defs)
        self.password = secrets.token_urlsafe(12)
        with closing(self.db.connect()) as conn:
            self.where = {"database": where.database(conn, self.db.kind), "machine": where.machine(),
                          "settings": where.settings(conn, self.db.kind)}

    def run(self) -> Iterator[Result]:
        try:
            self.setup()
            yield self.build_list()
            created = list(sla_attach(self)) if has_slas(self) else [self.create_children()]
            yield from created
            if self.db.kind == "postgresql":  # the job is sliced there: two workers share it
                yield workers_speedup(self, created[0])
            yield self.update_parent(self.bench.names["sync"], self.bench.sync_values)
            yield self.update_parent(self.bench.names["close"], self.bench.close_values)
            if has_slas(self) and self.scale <= DEFAULT_SCALE:
                yield sla_repair(self)
            if self.writes_only:
                return
            if has_slas(self):
                yield sla_tick(self)
            if self.bench.email_count:
                yield self.email_ingest()
            if self.bench.event_count:
                yield self.event_ingest()
            yield email_delivery(self)
            yield from self.pages()
        finally:
            self.runtime.engine.dispose()
            self.db.drop()

    # -- data ---------------------------------------------------------------------------

    def setup(self) -> None:
        started = time.perf_counter()
        initialise(self.config, self.defs, runtime=self.runtime)
        counts = {g.name: generator_count(g, self.scale) for g in self.bench.generators}
        kept = write_generators(self.defs) if self.writes_only else set(counts)
        stamp = now()
        with self.runtime.transaction() as service, job_cache(service.conn, SETUP_CACHE_KB):
            add_user(service, "bench", self.password, ["admin"], {"name": "Bench", "email": "bench@example.com"})
            table = service.storage.physical(PROPERTIES)
            for name, value in self.bench.properties.items():
                sys_id = service.conn.execute(sa.select(table.c.sys_id).where(table.c.name == name)).scalar_one()
                service.update(PROPERTIES, sys_id, {"value": render_value(self.defs.properties[name].type, value)})
            with service.deferred_references(), service.by_definitions():  # declared in bench.yaml
                for gen in self.bench.generators:
                    if gen.name in kept:
                        service.insert_many(gen.table, generated_rows(gen, counts, {}, stamp, ordered_sys_id))
            if self.bench.customer_roles and not self.writes_only:  # the access-rule benchmarks' login
                values = {k: ordered_sys_id(v["ref"], v.get("row", 1) - 1) if isinstance(v, dict) else v
                          for k, v in self.bench.customer_values.items()}
                add_user(service, CUSTOMER, self.password, list(self.bench.customer_roles), {"name": "Bench customer"})
                with service.by_definitions():
                    users = service.storage.physical("sys_user")
                    user_id = service.conn.execute(sa.select(users.c.sys_id).where(users.c.user_name == CUSTOMER)
                                                   ).scalar_one()
                    service.update("sys_user", user_id, values)
        refresh_statistics(self.runtime.engine)
        self.runtime.engine.dispose()  # the setup's connection and its page cache go
        give_back()
        rows = sum(n for name, n in counts.items() if name in kept)
        self.say(f"setup: {rows:,} rows generated on {self.db.label} in {time.perf_counter() - started:.1f} s")

    # -- the write benchmarks -------------------------------------------------------------

    def measured(self, name: str, tables: list[str], work: Callable[[], int], extra: str = "",
                 deleted_from: tuple[str, ...] = ()) -> Result:
        """Run `work` (returning n) against the live database, then replay its net writes to
        `tables` (and its deletes from `deleted_from`) into a snapshot taken just before it."""
        self.runtime.engine.dispose()
        snapshot = self.db.snapshot()
        since = self._stamp()
        with peak_rss() as memory:
            started = time.perf_counter()
            n = work()
            seconds = time.perf_counter() - started
        if isinstance(n, tuple):  # work done in a process of its own, which timed and measured itself
            n, seconds, memory["peak_mb"] = n
        self.runtime.engine.dispose()
        after, before = self.db.connect(), self.db.connect(snapshot)
        try:
            writes = net_writes(after, before, tables, since, self.db.placeholder, deleted_from)
            query = self._plain_query(before, extra) if extra else 0.0
            baseline = replay(before, writes, self.db.placeholder) + query
        finally:
            after.close()
            before.close()
            self.db.drop_snapshot(snapshot)
        alone = f" (its query alone {query:.3f} s)" if extra else ""
        self.say(f"{name}: {n:,} in {seconds:.2f} s, peak memory {memory['peak_mb']:.0f} MB; "
                 f"baseline {baseline:.2f} s for the same {writes.rows:,} rows{alone}")
        return Result(name, n, seconds, baseline, {"rows": writes.rows, "peak_mb": memory["peak_mb"]})

    def build_list(self) -> Result:
        """The member list built by its condition over every record of the member table."""
        b = self.bench
        with self.runtime.transaction() as service, service.by_definitions():
            self.list_id = service.insert(b.list_table, dict(b.list_values))["sys_id"]
            lists = lists_for(service, b.list_table)
            record = lists.record(self.list_id)
            mtype, query = lists.mtype(record), lists.condition(record)
            members = service.storage.physical(mtype.members).name
            scanned = service.count(mtype.table, Query())
            selection = Selection(service.storage, mtype.table)
            plain = selection.select(selection.base.c.sys_id, where=query.where)
            sql = str(plain.compile(dialect=service.conn.dialect, compile_kwargs={"literal_binds": True}))

        def work() -> int:
            with self.runtime.transaction(SYSTEM) as service:
                run_action(service, b.list_table, self.list_id, b.list_action, {})
            return scanned

        return self.measured(b.names["list"], [members], work, extra=sql)

    def create_children(self) -> Result:
        """One child per member, through the background job of the parent's action."""
        b = self.bench
        self.created_since = now()  # the parent and its children are the records made from here on
        self.parent_id = self.new_parent(self.runtime)
        table = self.runtime.storage.physical(b.parent_table).name
        tables = [table, JOURNAL] + ([TASK_SLA, AUDIT] if self.defs.sla_root else [])
        result = self.measured(b.names["create"], tables,
                               lambda: self.run_create(self.runtime, self.config, self.parent_id))
        self.children = result.n
        return result

    def new_parent(self, runtime: Runtime) -> str:
        """A new parent record for the create action, its member list the one built_list made."""
        b = self.bench
        with runtime.transaction() as service, service.by_definitions():
            return service.insert(b.parent_table, {**b.parent_values, b.list_field: self.list_id})["sys_id"]

    def run_create(self, runtime: Runtime, config: Config, parent_id: str) -> tuple[int, float, float]:
        """The parent's create action, its job run in a fresh process as a worker runs it: (children
        made, the job's seconds, the process's peak memory in MB)."""
        b = self.bench
        with runtime.transaction(SYSTEM) as service:
            job = run_action(service, b.parent_table, parent_id, b.create_action, dict(b.create_inputs)).job
        env = {**os.environ, "CASELOOM_DATABASE_URL": config.database_url,
               "CASELOOM_DEFINITIONS": config.definitions, "CASELOOM_SCRIPTS": config.scripts,
               "CASELOOM_QUEUE": config.queue, "CASELOOM_INSTANCE": config.instance,
               "CASELOOM_UI": config.ui, "CASELOOM_SECRET_KEY": config.secret_key}
        ran = subprocess.run([sys.executable, "-m", "caseloom.bench.worker", job], env=env, capture_output=True,
                             text=True, timeout=3600)
        if ran.returncode != 0:
            raise RuntimeError(f"the {b.create_action} job's process failed: {ran.stderr.strip()[-2000:]}")
        done = json.loads(ran.stdout.strip().splitlines()[-1])
        if done["state"] != "done":
            raise RuntimeError(f"the {b.create_action} job did not finish: {done['state']}: {done['message']}")
        return done["done"], done["seconds"], done["peak_mb"]

    def update_parent(self, name: str, values: dict) -> Result:
        b = self.bench
        table = self.runtime.storage.physical(b.parent_table).name

        def work() -> int:
            with self.runtime.transaction(SYSTEM) as service:
                service.update(b.parent_table, self.parent_id, dict(values))
            return self.children

        return self.measured(name, [table, JOURNAL, AUDIT] + ([TASK_SLA] if self.defs.sla_root else []), work)

    def email_ingest(self) -> Result:
        """Inbound e-mail: new messages from the sender generator's rows (one per row), each followed
        by a reply to it (threaded by In-Reply-To), acted on one transaction each as the IMAP poll does;
        the baseline replays the same net rows."""
        from email.message import EmailMessage

        from ..inbound import receive

        b = self.bench
        generator, field_name = b.email_sender
        table = next(g.table for g in b.generators if g.name == generator)
        pairs = b.email_count // 2
        with self.runtime.transaction() as service:
            physical = service.storage.physical(table)
            ids = [ordered_sys_id(generator, i) for i in range(pairs)]
            found = dict(service.conn.execute(sa.select(physical.c.sys_id, physical.c[field_name])
                                              .where(physical.c.sys_id.in_(ids))).all())
        messages = []
        for i, sys_id in enumerate(ids):
            for reply in (False, True):
                msg = EmailMessage()
                msg["From"], msg["To"] = found.get(sys_id) or f"nobody{i}@example.com", "support@bench.example"
                msg["Subject"] = f"{'Re: ' if reply else ''}Bench message {i}"
                msg["Message-ID"] = f"<bench-{i}-{int(reply)}@bench.example>"
                if reply:
                    msg["In-Reply-To"] = f"<bench-{i}-0@bench.example>"
                msg.set_content("Thanks, that helped." if reply else f"Something is wrong (message {i}).")
                messages.append(bytes(msg))
        outcomes: dict[str, int] = {}

        def work() -> int:
            for raw in messages:
                with self.runtime.transaction() as service:
                    action = receive(service, raw).action
                outcomes[action] = outcomes.get(action, 0) + 1
            return len(messages)

        tables = [self.runtime.storage.physical(b.views_table).name, JOURNAL, AUDIT, EMAIL] + \
            ([TASK_SLA] if self.defs.sla_root else [])
        result = self.measured(b.names["email"], tables, work)
        self.say(f"{b.names['email']}: " + ", ".join(f"{n:,} {k}" for k, n in sorted(outcomes.items())))
        return result

    def event_ingest(self) -> Result:
        """Monitoring events posted to /api/global/em/jsonv2 in batches (one request and transaction each,
        through the Flask app in this process), over `keys` nodes: the first events open an alert per node, the
        rest update them; every tenth round over the nodes is Clear events, which close the alerts, and
        the next round reopens them. Timed after one empty batch, which checks the client's password.
        The baseline is the plain driver inserting the same event rows."""
        from ..web import create_app, db

        b = self.bench
        token = base64.b64encode(f"bench:{self.password}".encode()).decode()
        headers = {"Authorization": f"Basic {token}", "Accept": "application/json"}
        batches = []
        for start in range(0, b.event_count, b.event_batch):
            batches.append(json.dumps({"records": [
                {"source": "Bench", "node": f"node-{i % b.event_keys:05d}", "type": "Disk", "resource": "/data",
                 "metric_name": "usage", "severity": "0" if (i // b.event_keys) % 10 == 9 else str(1 + i % 4),
                 "description": f"Disk usage event {i}", "additional_info": f'{{"sample": {i}}}'}
                for i in range(start, min(start + b.event_batch, b.event_count))]}))
        app = create_app(self.config, self.defs)
        with app.app_context():
            db.engine.dispose()  # no connection open while the database is copied for the baseline
        outcome = {"alerts_opened": 0, "alerts_updated": 0, "ignored": 0}

        def work() -> int:
            client = app.test_client()
            for body in batches:
                r = client.post("/api/global/em/jsonv2", data=body, content_type="application/json", headers=headers)
                if r.status_code != 200 or r.json["result"]["errors"]:
                    raise RuntimeError(f"event_ingest: {r.status_code} {r.get_data(as_text=True)[:500]}")
                for key in outcome:
                    outcome[key] += r.json["result"][key]
            return b.event_count

        with app.test_client() as client:  # warm: the client's password checked once (its hash, about 0.1 s),
            # as a monitoring tool posting batches all day pays it once; an empty batch writes nothing
            r = client.post("/api/global/em/jsonv2", data='{"records": []}', content_type="application/json",
                            headers=headers)
            if r.status_code != 200:
                raise RuntimeError(f"event_ingest: {r.status_code} {r.get_data(as_text=True)[:500]}")
        with app.app_context():
            db.engine.dispose()
        try:
            result = self.measured(b.names["events"], [self.runtime.storage.physical("em_event").name], work)
        finally:
            with app.app_context():
                db.engine.dispose()
        self.say(f"{b.names['events']}: {outcome['alerts_opened']:,} alerts opened, {outcome['alerts_updated']:,} "
                 f"updates to alerts, {outcome['ignored']:,} Clear events with nothing to clear")
        return result

    def _customer_query(self, table: str) -> str:
        """The customer's read rule on `table` as the encoded query it stands for now (their own values
        in it): the same rows, asked for without the rule."""
        from ..access import row_rule
        from ..query import acting_as, resolve_dynamic, to_encoded
        from ..users import actor_named, user_lookup

        with self.runtime.engine.connect() as conn:
            actor = actor_named(self.runtime.storage, conn, CUSTOMER)
        rule = row_rule(self.defs, actor, table, "read")
        with acting_as(actor.sys_id, actor.user_name, user_lookup(self.runtime.storage, self.runtime.engine.connect,
                                                                   actor.sys_id)):
            resolved = _without_nothing(resolve_dynamic(rule))
        return to_encoded(Query(resolved))

    def _plain_query(self, conn, sql: str) -> float:
        started = time.perf_counter()
        cur = conn.cursor()
        cur.execute(sql)
        cur.fetchall()
        return time.perf_counter() - started

    def _stamp(self):
        # a hair before now: the clock of the rows written next is the same clock
        stamp = now() - dt.timedelta(milliseconds=1)
        return stamp.strftime("%Y-%m-%d %H:%M:%S.%f") if self.db.kind == "sqlite" else stamp

    # -- pages and API --------------------------------------------------------------------

    def stats_group_by(self, app, plain, staff: http.Browser, table: str, total: int) -> Result:
        """The Aggregate API's count of every record by the declared fields (median of 20 requests),
        against the plain driver running the same GROUP BY."""
        path = f"/api/now/stats/{table}?sysparm_count=true&sysparm_group_by={','.join(self.bench.group_by)}"
        median = staff.median([path] * 20)
        grouped = [(sql, params) for sql, params in http.capture_sql(app, path, "bench", self.password)
                   if "GROUP BY" in sql]
        baseline = http.replay_median(plain, grouped, rounds=10)
        self.say(f"stats_group_by: median {median * 1000:.1f} ms over 20 requests with {total:,} records "
                 f"(count by {', '.join(self.bench.group_by)}); its GROUP BY by the plain driver {baseline * 1000:.1f} ms")
        return Result("stats_group_by", total, median, baseline)

    def quick_search(self, app, plain, staff: http.Browser, table: str, total: int) -> Result:
        """A list's quick search for the declared words (median of 20 list pages), against the plain driver
        running the same statements: through the table's text index where it has one."""
        path = f"/{table}_list.do?sysparm_search={quote(self.bench.search)}"
        median = staff.median([path] * 20)
        sql = http.capture_sql(app, path, "bench", self.password)
        baseline = http.replay_median(plain, sql)
        self.say(f"quick_search: median {median * 1000:.1f} ms over 20 list pages searching {self.bench.search!r} in "
                 f"{total:,} records; the same {len(sql)} statements by the plain driver {baseline * 1000:.2f} ms")
        return Result("quick_search", total, median, baseline)

    def parent_view(self, app, plain, staff: http.Browser) -> Result:
        """The form of the parent the write benchmarks made, with its children created, synced and closed
        (a major case's page: its workspace, its related list of children), and the parts of its workspace
        it draws after it (the communications), as a browser completes them: the median of 10 visits; against
        the plain driver running the same statements."""
        path = f"/{self.bench.parent_table}.do?sys_id={self.parent_id}"
        visit = [path, *http.drawn_after(staff.get(path), "/ui/workspace/")]
        median = staff.median_visit(visit)
        baseline, counts = 0.0, []
        for part in visit:
            seconds, ran = http.replay_paths(app, plain, [part], "bench", self.password)
            baseline, counts = baseline + seconds, counts + ran
        parts = f" and the {len(visit) - 1} part(s) of its workspace drawn after it" if len(visit) > 1 else ""
        self.say(f"parent_view: median {median * 1000:.1f} ms over 10 visits of the parent's form{parts}, with its "
                 f"{self.children:,} children; the same {' + '.join(map(str, counts))} statements by the plain "
                 f"driver {baseline * 1000:.2f} ms")
        return Result("parent_view", self.children, median, baseline)

    def menu_lists(self, app, plain, staff: http.Browser, me: str, total: int) -> Iterator[Result]:
        """Every list the menu opens (its modules with a table and a query, `{me}` the bench's user), each the
        median of 10 requests: the slowest of them, against the plain driver running that list's statements.
        A list is sorted and filtered as its module says, so each needs an index the plain `list_view` (in
        the primary key's order) never shows the lack of."""
        paths: dict[str, str] = {}
        for application in self.defs.menu:
            for module in application.modules:
                if module.table and not module.page:
                    query = quote(module.query_for(me), safe=",")
                    view = f"&sysparm_view={quote(module.view)}" if module.view else ""
                    paths.setdefault(f"/{module.table}_list.do?sysparm_query={query}{view}", module.label)
        if not paths:
            return
        medians = {path: staff.median([path] * 10) for path in paths}
        slowest = max(medians, key=medians.get)
        baseline, counts = http.replay_paths(app, plain, [slowest] * 10, "bench", self.password)
        listed = ", ".join(f"{paths[p]} {medians[p] * 1000:.1f}" for p in sorted(medians, key=medians.get, reverse=True))
        self.say(f"menu_lists: {len(paths)} lists of the menu with {total:,} records, the slowest {paths[slowest]!r} "
                 f"(median of 10) {medians[slowest] * 1000:.1f} ms; its {http.statements_words(counts)} statements "
                 f"by the plain driver {baseline * 1000:.2f} ms. Each, ms: {listed}")
        yield Result("menu_lists", total, medians[slowest], baseline)

    def similar_cases(self, app, plain, staff: http.Browser, table: str, ids: list[str], total: int) -> Result:
        """The records most like one (the similar API with the declared similar list: what a form's panel
        runs), the median over 20 different records, against the plain driver running the same statements."""
        paths = [f"/api/caseloom/similar/{table}/{i}?sysparm_list={quote(self.bench.similar)}" for i in ids[:20]]
        staff.median(paths[:3])  # warm
        median = staff.median(paths)
        baseline, counts = http.replay_paths(app, plain, paths, "bench", self.password, rounds=3)
        self.say(f"similar_cases: median {median * 1000:.1f} ms over {len(paths)} records' similar "
                 f"{self.bench.similar!r} among {total:,} records; the same {http.statements_words(counts)} "
                 f"statements each by the plain driver {baseline * 1000:.2f} ms (the median over the same records)")
        return Result("similar_cases", total, median, baseline)

    def dashboard_view(self, port: int, app, plain, staff: http.Browser, total: int) -> Result:
        """A dashboard as a browser opens it: its page, then every report's card at once, as htmx asks
        for them (a browser keeps up to six connections to a server; the server here has two workers);
        the median of 10 openings until the last card has come, against the plain driver running the
        same statements one after the other."""
        from concurrent.futures import ThreadPoolExecutor

        board = self.defs.dashboards[self.bench.dashboard]
        cards = [f"/report/{r}?range={board.range}" for r in board.reports]
        tabs = [http.Browser(port, "bench", self.password) for _ in cards[:6]]
        hx = {"HX-Request": "true"}

        def card(i: int) -> None:
            for path in cards[i::len(tabs)]:
                tabs[i].get(path, hx)

        times = []
        with ThreadPoolExecutor(len(tabs)) as pool:
            for round_no in range(12):
                started = time.perf_counter()
                staff.get(f"/dashboard/{board.name}")
                list(pool.map(card, range(len(tabs))))
                if round_no >= 2:  # two warm-up rounds
                    times.append(time.perf_counter() - started)
        median = sorted(times)[len(times) // 2]
        one_by_one = []
        for path in cards:
            started = time.perf_counter()
            staff.get(path, hx)
            one_by_one.append(f"{path.split('?')[0].rsplit('/', 1)[1]} {(time.perf_counter() - started) * 1000:.0f}")
        sql = [s for path in [f"/dashboard/{board.name}", *cards] for s in http.capture_sql(app, path, "bench", self.password)]
        baseline = http.replay_median(plain, sql, rounds=10)
        self.say(f"dashboard_view: {board.name!r} with {len(board.reports)} reports, median {median * 1000:.0f} ms "
                 f"over 10 openings with {total:,} records (each card alone, ms: {', '.join(one_by_one)}); the same "
                 f"{len(sql)} statements by the plain driver one after the other {baseline * 1000:.0f} ms")
        return Result("dashboard_view", total, median, baseline)

    def customer_pages(self, port: int, app, plain, staff: http.Browser, table: str, total: int) -> Iterator[Result]:
        """What a row rule costs: the customer's list through the API against the administrator's list
        of the same rows asked for by the rule's own query (row_rule_list), and the portal's home page
        (portal_list) against the plain driver replaying its SQL."""
        customer = http.Browser(port, CUSTOMER, self.password)
        fields = "sysparm_limit=20&sysparm_fields=sys_id,number,short_description,state"
        api = f"/api/now/table/{table}?{fields}"
        same = f"{api}&sysparm_query={quote(self._customer_query(table))}"
        mine, theirs = customer.median([api] * 40), staff.median([same] * 40)
        self.say(f"row_rule_list: the customer's list {mine * 1000:.1f} ms (median of 40), the same rows asked for "
                 f"by the administrator without a rule {theirs * 1000:.1f} ms; {total:,} records")
        yield Result("row_rule_list", total, mine, theirs)
        if self.bench.portal:
            path = f"/{self.bench.portal}"
            median = customer.median([path] * 30)
            sql = http.capture_sql(app, path, CUSTOMER, self.password)
            baseline = http.replay_median(plain, sql)
            self.say(f"portal_list: median {median * 1000:.1f} ms over 30 requests with {total:,} records; the same "
                     f"{len(sql)} statements by the plain driver {baseline * 1000:.2f} ms")
            yield Result("portal_list", total, median, baseline)

    def export_csv(self, env: dict, app, plain, table: str, total: int) -> Result:
        """The views table's whole list as CSV (`?CSV`) from a gunicorn worker of its own, downloaded
        over loopback, with the worker's peak memory; against the plain driver running the same
        statements and writing the rows as CSV."""
        path = f"/{table}_list.do?CSV"
        # the baseline first: its untimed warm-up run is then the first read of the rows the benchmarks before
        # wrote, the slow one (PostgreSQL sets their hint bits, writing their pages). In process, on one
        # database: 77.5 s for the export that read them first, 24.8 to 28.5 s for the same export after it
        baseline = http.replay_csv(plain, http.capture_sql(app, path, "bench", self.password))
        started: list = []
        with http.gunicorn(env, workers=1, timeout=900, started=started) as port:
            # warm; and the master listens before it forks its worker: once a request is answered, the worker is there
            http.download(port, f"/{table}_list.do?CSV&sysparm_query=sys_id=nothing", "bench", self.password)
            worker = children(started[0].pid)[0]
            before = rss_bytes(worker) / 2**20
            with peak_rss(every=0.05, pid=worker) as memory:
                size, seconds = http.download(port, path, "bench", self.password)
        self.say(f"export_csv: {total:,} records, {size / 2**20:.0f} MB of CSV in {seconds:.2f} s "
                 f"({total / seconds:,.0f} rows/s), the worker's peak memory {memory['peak_mb']:.0f} MB "
                 f"({before:.0f} MB before); the same statements by the plain driver writing CSV {baseline:.2f} s")
        return Result("export_csv", total, seconds, baseline, {"peak_mb": memory["peak_mb"], "bytes": size})

    def pages(self) -> Iterator[Result]:
        from ..web import create_app

        table = self.bench.views_table
        with self.runtime.transaction() as service:
            total = service.count(table, Query())
            physical = service.storage.physical(table)
            ids = list(service.conn.execute(sa.select(physical.c.sys_id).order_by(physical.c.sys_id)
                                            .limit(50)).scalars())
            me = actor_named(service.storage, service.conn, "bench").sys_id
        self.runtime.engine.dispose()
        list_paths = [f"/{table}_list.do"] * 30 + [f"/{table}_list.do?sysparm_first_row=21"] * 10
        form_paths = [f"/{table}.do?sys_id={i}" for i in ids]
        api_path = f"/api/now/table/{table}/{ids[0]}"
        app = create_app(self.config, self.defs)
        plain = self.db.connect()
        env = {"CASELOOM_DATABASE_URL": self.db.url, "CASELOOM_INSTANCE": str(self.folder),
               "CASELOOM_QUEUE": self.config.queue, "CASELOOM_SECRET_KEY": self.config.secret_key,
               "CASELOOM_DEFINITIONS": str(Path(self.config.definitions).resolve()),
               "CASELOOM_UI": str(Path(self.config.ui).resolve())}
        try:
            with http.serve(env) as port:  # `caseloom serve --workers 2`, as deployed
                browser = http.Browser(port, "bench", self.password)
                for name, paths in (("list_view", list_paths), ("form_view", form_paths)):
                    median = browser.median(paths)
                    baseline, counts = http.replay_paths(app, plain, paths, "bench", self.password)
                    self.say(f"{name}: median {median * 1000:.1f} ms over {len(paths)} requests with {total:,} "
                             f"records; the same {http.statements_words(counts)} statements each by the plain driver "
                             f"{baseline * 1000:.2f} ms (the median over the same pages)")
                    yield Result(name, total, median, baseline)
                yield self.parent_view(app, plain, browser)
                yield from self.menu_lists(app, plain, browser, me, total)
                token = base64.b64encode(f"bench:{self.password}".encode()).decode()
                # a connection per request, as the documented nginx (HTTP/1.0 to the app) makes them: a kept-
                # alive connection stays with the process that accepted it, and wrk's eight, opened at once,
                # are now and then all accepted by one of the two processes (half the throughput)
                api_headers = {"Authorization": f"Basic {token}", "Accept": "application/json", "Connection": "close"}
                http.wrk(port, api_path, api_headers, seconds=2)  # warm: every thread's first request
                load = http.wrk(port, api_path, api_headers, seconds=max(2, min(10, self.scale // 10_000)))
                sql = http.capture_sql(app, api_path, "bench", self.password)
                baseline = http.replay_median(plain, sql) * load["requests"]
                self.say(f"api_get: {load['requests'] / load['seconds']:.0f} requests/s, no errors "
                         f"(caseloom serve --workers 2, wrk on loopback, a connection per request)")
                yield Result("api_get", load["requests"], load["seconds"], baseline)
                if self.bench.group_by:
                    yield self.stats_group_by(app, plain, browser, table, total)
                if self.bench.dashboard:
                    yield self.dashboard_view(port, app, plain, browser, total)
                if self.bench.search:
                    yield self.quick_search(app, plain, browser, table, total)
                if self.bench.similar:
                    yield self.similar_cases(app, plain, browser, table, ids, total)
                if self.bench.customer_roles:
                    yield from self.customer_pages(port, app, plain, browser, table, total)
            yield self.export_csv(env, app, plain, table, total)
        finally:
            plain.close()
            with app.app_context():
                from ..web import db

                db.engine.dispose()


def write_generators(defs: Definitions) -> set[str]:
    """The generators the write benchmarks need: those of the member list's member table (every
    generator when that is not known from the list's values) and, in turn, those they reference."""
    b = defs.bench
    by_name = {g.name: g for g in b.generators}
    mdef = defs.member_list_for(b.list_table)
    mtype = mdef.types.get(b.list_values.get(mdef.type_field)) if mdef is not None else None
    todo = [g.name for g in b.generators if mtype is None or g.table == mtype.table]
    kept: set[str] = set()
    while todo:
        name = todo.pop()
        if name in kept or name not in by_name:
            continue
        kept.add(name)
        todo += [v["ref"] for v in by_name[name].values.values() if isinstance(v, dict) and "ref" in v]
    return kept


def _without_nothing(node):
    """A resolved condition without the parts that match nothing (a user value that is empty), so it
    can be written as an encoded query."""
    from ..query.nodes import All, AnyOf, Not

    if isinstance(node, AnyOf):
        items = tuple(i for i in (_without_nothing(x) for x in node.items) if not (isinstance(i, AnyOf) and not i.items))
        return items[0] if len(items) == 1 else AnyOf(items)
    if isinstance(node, All):
        return All(tuple(_without_nothing(x) for x in node.items))
    if isinstance(node, Not):
        return Not(_without_nothing(node.item))
    return node
