"""Configuration from the environment (contract section 3)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class Config:
    database_url: str = "sqlite:///instance/caseloom.db"
    definitions: str = "definitions"
    scripts: str = "scripts"
    queue: str = "sqlite:///instance/queue.db"
    secret_key: str | None = None
    instance: str = "instance"
    ui: str = "ui"
    smtp_host: str | None = None  # no host: e-mail stays ready, nothing is sent
    smtp_port: int = 25
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_from: str = "caseloom@localhost"
    smtp_starttls: str = "auto"  # auto (when the server offers it), true (required), false
    smtp_connections: int = 4  # SMTP sessions a delivery run sends over side by side
    imap_url: str | None = None  # a mailbox the worker polls for inbound e-mail (caseloom.inbound.imap)
    imap_poll_seconds: float = 30.0
    # how often a background action commits its work and progress: a crash redoes at most this much
    job_commit_seconds: float = 1.0
    # members per slice of a child-creation job on PostgreSQL: idle workers claim slices concurrently
    job_slice_rows: int = 25_000
    # connections each process keeps to a server database (as many more at a peak)
    db_pool_size: int = 10
    # -- security (README: Security) --------------------------------------------------------------
    base_url: str | None = None  # links in API answers and e-mails; unset: the request's own URL
    proxies: int = 0  # reverse proxies in front of the server whose X-Forwarded-* headers are trusted
    max_request_bytes: int = 32 * 1024 * 1024  # a larger body is refused with 413
    max_batch_requests: int = 100  # sub-requests in one Batch API call
    max_import_rows: int = 1_000_000  # rows in one CSV import
    login_failures_per_user: int = 5  # failed sign-ins of one user name before a pause
    login_failures_per_address: int = 20  # failed sign-ins from one client address before a pause
    login_lockout_seconds: int = 300  # how long the pause lasts (429 with Retry-After)
    script_cpu_budget_seconds: float = 60.0  # CPU time of sandboxed scripts per user per hour
    # -- operations (README: Operations) ----------------------------------------------------------
    log_format: str = "text"  # text | json: one JSON object per log line (server, worker, CLI)

    @classmethod
    def from_env(cls, **overrides) -> Config:
        env = os.environ
        config = cls(
            database_url=env.get("CASELOOM_DATABASE_URL", cls.database_url),
            definitions=env.get("CASELOOM_DEFINITIONS", cls.definitions),
            scripts=env.get("CASELOOM_SCRIPTS", cls.scripts),
            queue=_queue(env.get("CASELOOM_QUEUE"), env.get("CASELOOM_INSTANCE", cls.instance)),
            secret_key=env.get("CASELOOM_SECRET_KEY"),
            instance=env.get("CASELOOM_INSTANCE", cls.instance),
            ui=env.get("CASELOOM_UI", cls.ui),
            smtp_host=env.get("CASELOOM_SMTP_HOST") or None,
            smtp_port=_port(env.get("CASELOOM_SMTP_PORT"), cls.smtp_port),
            smtp_user=env.get("CASELOOM_SMTP_USER") or None,
            smtp_password=env.get("CASELOOM_SMTP_PASSWORD") or None,
            smtp_from=env.get("CASELOOM_SMTP_FROM") or cls.smtp_from,
            smtp_starttls=_choice("CASELOOM_SMTP_STARTTLS", env.get("CASELOOM_SMTP_STARTTLS"), cls.smtp_starttls,
                                  ("auto", "true", "false")),
            smtp_connections=_count("CASELOOM_SMTP_CONNECTIONS", env.get("CASELOOM_SMTP_CONNECTIONS"),
                                    cls.smtp_connections, 1, 32),
            imap_url=_imap_url(env.get("CASELOOM_IMAP_URL")),
            imap_poll_seconds=_seconds("CASELOOM_IMAP_POLL_SECONDS", env.get("CASELOOM_IMAP_POLL_SECONDS"),
                                       cls.imap_poll_seconds),
            job_commit_seconds=_seconds("CASELOOM_JOB_COMMIT_SECONDS", env.get("CASELOOM_JOB_COMMIT_SECONDS"),
                                        cls.job_commit_seconds),
            db_pool_size=_count("CASELOOM_DB_POOL_SIZE", env.get("CASELOOM_DB_POOL_SIZE"), cls.db_pool_size, 1, 1000),
            job_slice_rows=_count("CASELOOM_JOB_SLICE_ROWS", env.get("CASELOOM_JOB_SLICE_ROWS"), cls.job_slice_rows,
                                  100, 10_000_000),
            base_url=_base_url(env.get("CASELOOM_BASE_URL")),
            proxies=_count("CASELOOM_PROXIES", env.get("CASELOOM_PROXIES"), cls.proxies, 0, 10),
            max_request_bytes=_count("CASELOOM_MAX_REQUEST_BYTES", env.get("CASELOOM_MAX_REQUEST_BYTES"),
                                     cls.max_request_bytes, 1024, 2**40),
            max_batch_requests=_count("CASELOOM_MAX_BATCH_REQUESTS", env.get("CASELOOM_MAX_BATCH_REQUESTS"),
                                      cls.max_batch_requests, 1, 100_000),
            max_import_rows=_count("CASELOOM_MAX_IMPORT_ROWS", env.get("CASELOOM_MAX_IMPORT_ROWS"),
                                   cls.max_import_rows, 1, 10**9),
            login_failures_per_user=_count("CASELOOM_LOGIN_FAILURES_PER_USER", env.get("CASELOOM_LOGIN_FAILURES_PER_USER"),
                                           cls.login_failures_per_user, 1, 10**6),
            login_failures_per_address=_count("CASELOOM_LOGIN_FAILURES_PER_ADDRESS",
                                              env.get("CASELOOM_LOGIN_FAILURES_PER_ADDRESS"),
                                              cls.login_failures_per_address, 1, 10**6),
            login_lockout_seconds=_count("CASELOOM_LOGIN_LOCKOUT_SECONDS", env.get("CASELOOM_LOGIN_LOCKOUT_SECONDS"),
                                         cls.login_lockout_seconds, 1, 86_400),
            script_cpu_budget_seconds=_seconds("CASELOOM_SCRIPT_CPU_BUDGET_SECONDS",
                                               env.get("CASELOOM_SCRIPT_CPU_BUDGET_SECONDS"),
                                               cls.script_cpu_budget_seconds),
            log_format=log_format(env),
        )
        return replace(config, **{k: v for k, v in overrides.items() if v is not None})

    def session_secret(self) -> str:
        """CASELOOM_SECRET_KEY, or a key generated once into instance/ and reused."""
        if self.secret_key:
            return self.secret_key
        path = Path(self.instance) / "secret_key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_hex(32))
            path.chmod(0o600)
        return path.read_text().strip()


LOG_FORMATS = ("text", "json")


def log_format(env: Mapping[str, str] = os.environ) -> str:
    """CASELOOM_LOG_FORMAT: `text` (the default) or `json`. Read alone by the CLI, which sets up logging
    before a command reads the rest of the configuration."""
    return _choice("CASELOOM_LOG_FORMAT", env.get("CASELOOM_LOG_FORMAT"), Config.log_format, LOG_FORMATS)


def _port(raw: str | None, default: int) -> int:
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"CASELOOM_SMTP_PORT={raw!r}: expected a port number (1-65535), e.g. 25 or 587")
    return int(raw)


def _choice(name: str, raw: str | None, default: str, allowed: tuple[str, ...]) -> str:
    if not raw:
        return default
    if raw.lower() not in allowed:
        raise ValueError(f"{name}={raw!r}: expected one of {', '.join(allowed)}")
    return raw.lower()


def _seconds(name: str, raw: str | None, default: float) -> float:
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise ValueError(f"{name}={raw!r}: expected a number of seconds from 0 to 3600, e.g. 1 or 0.5")
    return value


def _count(name: str, raw: str | None, default: int, low: int, high: int) -> int:
    if not raw:
        return default
    if not raw.strip().isdigit() or not low <= int(raw) <= high:
        raise ValueError(f"{name}={raw!r}: expected a whole number from {low} to {high}")
    return int(raw)


SQLITE_QUEUE, REDIS_QUEUES = "sqlite:///", ("redis://", "rediss://", "unix://")


def queue_kind(url: str) -> str:
    """`sqlite` (a file, the embedded queue) or `redis` for a CASELOOM_QUEUE; a ValueError naming the
    variable for anything else (an in-memory SQLite queue included: no other process would see it)."""
    if url.startswith(SQLITE_QUEUE) and url != SQLITE_QUEUE + ":memory:":
        return "sqlite"
    if url.startswith(REDIS_QUEUES):
        return "redis"
    raise ValueError(f"CASELOOM_QUEUE={_no_password(url)!r}: expected sqlite:///path/to/queue.db or redis://host:port/db")


def _no_password(url: str) -> str:
    """A URL as it may be shown, its password as `***`, even when the URL does not parse."""
    from .logs import redacted

    try:
        return redacted(url)
    except ValueError:  # a port that is no number: whatever stands before the host goes
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}" if "@" in rest else url


def _queue(raw: str | None, instance: str) -> str:
    """CASELOOM_QUEUE, checked now: a URL of a kind the queue takes and, for a SQLite file, a folder
    that exists or is the instance folder, which the platform makes (a mistyped path is named, not
    made). Unset, the default's folder is made when the queue is first opened, as the default
    database's is."""
    if not raw:
        return Config.queue
    if queue_kind(raw) == "sqlite":
        folder = Path(raw[len(SQLITE_QUEUE):]).resolve().parent
        if not folder.is_dir() and folder != Path(instance).resolve():
            raise ValueError(f"CASELOOM_QUEUE={raw!r}: the folder {folder} does not exist; create it, or correct the "
                             "path (sqlite:///relative/path/queue.db, sqlite:////absolute/path/queue.db)")
    return raw


def _imap_url(raw: str | None) -> str | None:
    """CASELOOM_IMAP_URL, checked now (a bad one stops the process starting, naming what is wrong)."""
    if not raw or not raw.strip():
        return None
    from .inbound.imap import mailbox_of

    mailbox_of(raw)
    return raw.strip()


def _base_url(raw: str | None) -> str | None:
    """CASELOOM_BASE_URL, with one trailing slash; an http(s) URL without query or fragment."""
    if not raw:
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(raw.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"CASELOOM_BASE_URL={raw!r}: expected an http(s) URL such as https://cases.example.com/")
    return raw.strip().rstrip("/") + "/"
