"""Events in (ServiceNow's Event Management): a batch of events from a monitoring tool, each checked on
its own, kept in em_event and folded into alerts (em_alert) by message key.

- An event's message key is its own `message_key`, or by default source, node, type, resource and
  metric name joined by `_` (ServiceNow's default).
- The first event of a key opens an alert. A repeat updates the alert's severity, description,
  additional information, last event time and event count. A Clear event (severity 0) closes it.
- An event for an alert closed less than `caseloom.em.reopen_seconds` before reopens it (state
  Reopen); a later one opens a new alert. A Clear event with no alert to close is kept as ignored.
- A batch is folded in its order, set-based: one read of the alerts of its keys, the new alerts
  written with one insert_many and the changed ones with one update_many (so rules on em_alert run
  once per alert, however many events it took), the events with one executemany. A storm of events
  for one key is one alert. On PostgreSQL each key is locked for the transaction first
  (pg_advisory_xact_lock, in key order), so two batches at once never open two alerts for one key;
  SQLite's request holds the write lock throughout.
"""

from __future__ import annotations

import datetime as dt
import json
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .database import array_text, dict_rows, one_of
from .fieldtypes import FieldValueError, iso_datetime, valid_text
from .query import Query, select_rows
from .records import new_sys_id, now

if TYPE_CHECKING:
    from .properties import Properties
    from .records import RecordService

EVENTS, ALERTS = "em_event", "em_alert"
REOPEN_SECONDS = "caseloom.em.reopen_seconds"
MAX_RECORDS = "caseloom.em.max_records"
MAX_BYTES = "caseloom.em.max_bytes"
SEVERITIES = {"0": "Clear", "1": "Critical", "2": "Major", "3": "Minor", "4": "Warning", "5": "OK"}
CLEAR = "0"
OPEN, REOPEN, CLOSED = "Open", "Reopen", "Closed"
KEY_FIELDS = ("source", "node", "type", "resource", "metric_name")
FOLDED = (*KEY_FIELDS, "description", "additional_info")  # an event's text its alert takes
TEXT_FIELDS = {"source": 100, "event_class": 100, "node": 255, "type": 100, "resource": 255, "metric_name": 255,
               "message_key": 1024, "description": 65536}
FIELDS = (*TEXT_FIELDS, "severity", "additional_info", "time_of_event")
KNOWN = frozenset(FIELDS)
REQUIRED = ("source", "node", "severity")
ADDITIONAL_MAX = 65536
CHUNK = 500  # message keys per IN list


class EventError(ValueError):
    """A batch that cannot be taken at all (not a JSON object with a `records` list)."""


@dataclass
class Rejected:
    index: int
    reason: str

    def as_json(self) -> dict:
        return {"index": self.index, "reason": self.reason}


@dataclass
class Outcome:
    inserted: int = 0
    alerts_opened: int = 0
    alerts_updated: int = 0
    ignored: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)  # started by the alert rules' actions: enqueued after commit

    def as_json(self) -> dict:
        # "Default Bulk Endpoint" is what ServiceNow's endpoint answers; the rest says what became of the batch
        return {"Default Bulk Endpoint": f"{self.inserted} events were inserted", "inserted": self.inserted,
                "alerts_opened": self.alerts_opened, "alerts_updated": self.alerts_updated,
                "ignored": self.ignored, "errors": [r.as_json() for r in self.rejected]}


def records_of(body: Any, limit: int) -> list:
    """The `records` list of a request body, or EventError saying what is wrong with it."""
    if not isinstance(body, dict) or "records" not in body:
        raise EventError('the body must be a JSON object with a "records" list: {"records": [{...}, ...]}')
    records = body["records"]
    if not isinstance(records, list):
        raise EventError(f'"records" must be a list of events, not {type(records).__name__}')
    if len(records) > limit:
        raise EventError(f"{len(records):,} events in one request: at most {limit:,} ({MAX_RECORDS})")
    return records


def checked(index: int, raw: Any, received: dt.datetime) -> dict | Rejected:
    """One event's row for em_event, or why it is refused (naming the field)."""
    if not isinstance(raw, dict):
        return Rejected(index, f"an event is a JSON object, not {type(raw).__name__}")
    if not raw.keys() <= KNOWN:
        unknown = sorted(set(raw) - KNOWN)
        return Rejected(index, f"unknown field {unknown[0]!r}: extra values go in additional_info")
    for name in REQUIRED:
        if raw.get(name) in (None, ""):
            return Rejected(index, f"{name} is required")
    row: dict[str, Any] = {}
    for name, longest in TEXT_FIELDS.items():
        value = raw.get(name)
        if value is None:
            row[name] = ""
            continue
        if type(value) is str:  # the usual case, checked first
            if len(value) > longest:
                return Rejected(index, f"{name} is longer than {longest:,} characters")
            if not value.isascii() or "\x00" in value:
                problem = _unstorable(value)
                if problem:
                    return Rejected(index, f"{name} {problem}")
            row[name] = value
            continue
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return Rejected(index, f"{name} must be text, not {type(value).__name__}")
        value = str(value)
        if len(value) > longest:
            return Rejected(index, f"{name} is longer than {longest:,} characters")
        row[name] = value
    severity = raw["severity"]
    if isinstance(severity, bool) or str(severity).strip() not in SEVERITIES:
        known = ", ".join(f"{k} ({v})" for k, v in SEVERITIES.items())
        return Rejected(index, f"severity {severity!r} is not one of {known}")
    row["severity"] = str(severity).strip()
    info = raw.get("additional_info")
    if info is None:
        row["additional_info"] = ""
    else:
        text = info if isinstance(info, str) else json.dumps(info, ensure_ascii=False, sort_keys=True)
        if len(text) > ADDITIONAL_MAX:
            return Rejected(index, f"additional_info is longer than {ADDITIONAL_MAX:,} characters")
        if not text.isascii() or "\x00" in text:
            problem = _unstorable(text)
            if problem:
                return Rejected(index, f"additional_info {problem}")
        if isinstance(info, str) and info.strip():
            try:
                json.loads(info)
            except ValueError as exc:
                return Rejected(index, f"additional_info is not JSON ({exc}): give a JSON object, or a string "
                                       f"holding one")
        row["additional_info"] = text
    when = raw.get("time_of_event")
    if when in (None, ""):
        row["time_of_event"] = received
    else:
        try:
            row["time_of_event"] = iso_datetime(str(when))
        except (ValueError, OverflowError):
            return Rejected(index, f"time_of_event {when!r} is not a date and time (yyyy-MM-dd HH:mm:ss, UTC)")
    if not row["message_key"]:
        row["message_key"] = "_".join(row[name] for name in KEY_FIELDS)
    return row


def _unstorable(text: str) -> str | None:
    """Why a text cannot be stored (a NUL character, a lone surrogate), or None."""
    try:
        valid_text(text)
    except FieldValueError as exc:
        return str(exc)
    return None


def ingest(service: RecordService, records: list, props: Properties) -> Outcome:
    """Keep the good events of a batch and fold them into alerts, then run the alert rules on the alerts
    it opened or changed (caseloom.alerting); the bad events are listed by index. The caller has checked
    create access to em_event, commits, and then enqueues `outcome.jobs`."""
    from .alerting import apply_alert_rules

    reopen_seconds = props.get(REOPEN_SECONDS)
    received = now()
    outcome = Outcome()
    events: list[dict] = []
    for index, raw in enumerate(records):
        row = checked(index, raw, received)
        if isinstance(row, Rejected):
            outcome.rejected.append(row)
        else:
            events.append(row)
    if not events:
        return outcome
    keys = sorted({e["message_key"] for e in events})
    _lock(service.conn, keys)
    latest = _latest_alerts(service, keys)
    loaded = {alert["sys_id"]: dict(alert) for alert in latest.values()}  # as read, before the folding changes them
    opened: dict[str, dict] = {}  # sys_id -> the values of a new alert
    changed: dict[str, dict] = {}  # sys_id -> the new values of an existing alert
    reopen = dt.timedelta(seconds=reopen_seconds)
    for event in events:
        key, severity, when = event["message_key"], event["severity"], event["time_of_event"]
        alert = latest.get(key)
        closed_long_ago = alert is not None and alert["state"] == CLOSED and (
            reopen_seconds <= 0 or alert["closed_at"] is None or when - alert["closed_at"] > reopen)
        if alert is None or closed_long_ago:
            if severity == CLEAR:  # nothing open to clear
                event.update(state="ignored", processing_notes="a Clear event with no open alert for its message key")
                outcome.ignored += 1
                continue
            alert = {"sys_id": new_sys_id(), "message_key": key, "state": OPEN, "event_count": 0,
                     "reopen_count": 0, "initial_event_time": when, "closed_at": None}
            latest[key] = alert
            opened[alert["sys_id"]] = alert
        target = opened.get(alert["sys_id"]) or changed.setdefault(alert["sys_id"], {})
        if alert["state"] == CLOSED and severity != CLEAR:  # within the interval: reopened
            alert["reopen_count"] = (alert.get("reopen_count") or 0) + 1
            alert["state"], alert["closed_at"] = REOPEN, None
            target.update(state=REOPEN, closed_at=None, reopen_count=alert["reopen_count"])
        elif alert["state"] != CLOSED and severity == CLEAR:
            alert["state"], alert["closed_at"] = CLOSED, when
            target.update(state=CLOSED, closed_at=when)
        alert["event_count"] = (alert.get("event_count") or 0) + 1
        target.update(event_count=alert["event_count"], last_event_time=when, severity=severity)
        for name in FOLDED:  # what the event changes (its text, if any)
            value = event[name]
            if (value or name in KEY_FIELDS) and value != alert.get(name):
                target[name] = alert[name] = value
        event.update(state="processed", processing_notes="", alert=alert["sys_id"])
    # alerts are the platform's work for whoever may send events: their read-only fields are its to set
    with service.unchecked(), service.by_definitions():
        if opened:
            service.insert_many(ALERTS, [{k: v for k, v in a.items() if v is not None} for a in opened.values()])
        if changed:
            service.update_many(ALERTS, list(changed.items()), loaded=loaded)
    for event in events:
        event.setdefault("alert", None)
    service._system_insert(EVENTS, events, received)
    outcome.inserted, outcome.alerts_opened, outcome.alerts_updated = len(events), len(opened), len(changed)
    still_open = [i for i, a in opened.items() if a["state"] != CLOSED] + \
        [i for i, c in changed.items() if c.get("state", OPEN) != CLOSED]
    closed_now = [i for i, c in changed.items() if c.get("state") == CLOSED]
    outcome.jobs = apply_alert_rules(service, props, still_open, closed_now)
    return outcome


# Each key's lock taken in turn, in the order given, by one statement (one round trip, not one a key:
# those took half a batch's time). The aggregate reads the ordered subquery in its order, in the one
# process: a function's rows are never split among parallel workers, and the lock function is
# parallel-restricted (it runs only in the leader) besides.
LOCK_KEYS = sa.text(
    "SELECT count(pg_advisory_xact_lock(n)) FROM "
    "(SELECT n FROM unnest(CAST(:numbers AS bigint[])) WITH ORDINALITY AS given(n, place) ORDER BY place) AS keys")


def _lock(conn: sa.Connection, keys: list[str]) -> None:
    """On PostgreSQL, hold each message key's advisory lock until the transaction ends (in key order, so
    two batches never wait on each other in a cycle)."""
    if conn.dialect.name != "postgresql" or not keys:
        return
    conn.execute(LOCK_KEYS, {"numbers": array_text([_key_lock(key) for key in keys])})


def _key_lock(key: str) -> int:
    """A 63-bit lock number of a message key (two CRC32s: of the key and of it reversed)."""
    data = key.encode()
    return ((zlib.crc32(data) << 31) ^ zlib.crc32(data[::-1])) & 0x7FFFFFFFFFFFFFFF


def _latest_alerts(service: RecordService, keys: list[str]) -> dict[str, dict]:
    """The newest alert of each message key, whole, as the record service reads a record to update it
    (the batch's update_many takes them as read: under the keys' locks, nothing else changes them)."""
    dialect = service.conn.dialect
    stmt = service.storage.cached((*LATEST, dialect.name), lambda: _latest_statement(service.storage, dialect))
    found: dict[str, dict] = {}
    for start in range(0, len(keys), CHUNK):
        for row in dict_rows(service.conn.execute(stmt, {"keys": keys[start:start + CHUNK]})):
            found[row["message_key"]] = row  # the newest last
    return found


LATEST = ("events", "latest alerts")


def _latest_statement(storage, dialect: sa.Dialect) -> sa.Select:
    """The alerts of the message keys given as `keys`, oldest first, every stored field: built once per
    definitions set, as every batch of events reads it."""
    stmt, sel = select_rows(storage, ALERTS, Query(order=(("sys_created_on", False), ("sys_id", False))))
    return stmt.where(one_of(dialect, sel.base.c.message_key, "keys"))


__all__ = ["MAX_BYTES", "MAX_RECORDS", "REOPEN_SECONDS", "EventError", "Outcome", "Rejected", "checked", "ingest",
           "records_of"]
