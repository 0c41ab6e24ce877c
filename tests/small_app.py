"""A Caseloom app on a small definitions folder of a test's own, on a fresh database of the test's
backend (SQLite, and PostgreSQL when CASELOOM_TEST_POSTGRES_URL is set): behaviour the shipped
application does not show, from a few lines of YAML. Each test process initialises a small
application once, into a template database, and each test gets a copy of it, as conftest's tests get
copies of the shipped application's template."""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import json
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from werkzeug.security import generate_password_hash

import conftest
from caseloom.bootstrap import initialise
from caseloom.config import Config
from caseloom.definitions import Definitions, load_folder
from caseloom.runtime import Runtime
from caseloom.users import USERS, add_user
from conftest import Api, basic


def write_folder(folder: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


@dataclass
class SmallApp:
    app: object
    client: object

    @property
    def runtime(self) -> Runtime:
        return self.app.extensions["caseloom"]

    def api(self, user: str) -> Api:
        """The Table API as one of the app's users."""
        return UserApi(self.client, user)

    def sign_in(self, user: str) -> None:
        """A browser session for the UI pages."""
        self.client.get("/logout")
        page = self.client.get("/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        answer = self.client.post("/login", data={"user_name": user, "user_password": user,
                                                  "csrf_token": token.group(1)})
        assert answer.status_code == 302, answer.get_data(as_text=True)


class UserApi(Api):
    """`Api` for a user whose password is its name."""

    def __init__(self, client, user: str):
        self.client, self.headers = client, basic(user, user)


@functools.cache
def _hash(password: str) -> str:
    """A user's stored password (its name), hashed once per test process: each hash is a deliberately
    slow scrypt, and a test only needs the user to be able to sign in."""
    return generate_password_hash(password)


def _initialise(config: Config, defs: Definitions, users: dict[str, list[str]]) -> None:
    """`caseloom init --force` of the config's folder (read as `defs`) on its database, and the users added."""
    runtime = Runtime(config, defs)
    try:
        initialise(config, defs, force=True, runtime=runtime)
        with runtime.transaction() as service:
            table = service.storage.physical(USERS)
            for name, roles in users.items():
                add_user(service, name, None, roles)
                service.conn.execute(table.update().where(table.c.user_name == name).values(user_password=_hash(name)))
    finally:
        runtime.engine.dispose()


_TEMPLATES: dict[tuple[str, str], str] = {}  # (backend, the files' and users' digest) -> template database URL
_BASE: Path | None = None  # this test process's folder of SQLite templates and their definitions


def _folder(folder: Path, files: dict[str, str], base: Path | None) -> Path:
    """A definitions folder: a copy of `base` (none: an empty one) with `files` written over it."""
    if base is not None:
        shutil.copytree(base, folder, dirs_exist_ok=True)
    return write_folder(folder, files)


def _template(config: Config, files: dict[str, str], users: dict[str, list[str]],
              base: Path | None) -> tuple[str, str]:
    """The backend of the config's database and this process's template database of (files, users)
    on it, built on first use: most tests of a file share one small application, and its `init`
    took most of each test's time (half a second on SQLite, more on PostgreSQL)."""
    global _BASE
    backend = "sqlite" if config.database_url.startswith("sqlite") else "postgresql"
    digest = hashlib.sha256(json.dumps([str(base), sorted(files.items()), sorted(users.items())]).encode()).hexdigest()[:12]
    key = (backend, digest)
    if key not in _TEMPLATES:
        if _BASE is None:
            _BASE = Path(tempfile.mkdtemp(prefix="caseloom-small-"))
            atexit.register(shutil.rmtree, _BASE, True)
        folder = _folder(_BASE / f"definitions-{digest}", files, base)
        prefix = f"small_{digest}"

        def initialise_at(url: str) -> None:
            _initialise(replace(config, database_url=url, definitions=str(folder)), load_folder(folder), users)

        if backend == "postgresql" and prefix not in conftest.LATE_TEMPLATES:
            conftest.LATE_TEMPLATES.append(prefix)  # dropped at the session's end, even if its init fails
        _TEMPLATES[key] = conftest.build_template(_BASE, prefix, backend, initialise_at)
    return backend, _TEMPLATES[key]


@contextmanager
def small_app(config: Config, tmp_path: Path, files: dict[str, str],
              users: dict[str, list[str]], *, base: Path | None = None,
              own_database: bool = False) -> Iterator[SmallApp]:
    """An app on `files` (paths in a definitions folder -> YAML; over a copy of the folder `base`, when
    given) with `users` (name -> roles; each user's password is its name), on a fresh copy of this
    process's template of them (on the config's backend, not its database), or with `own_database`
    on the config's database itself, initialised there."""
    from caseloom.web import create_app, db

    folder = _folder(tmp_path / "small-definitions", files, base)
    config, defs = replace(config, definitions=str(folder)), load_folder(folder)
    with contextlib.ExitStack() as stack:
        if own_database:
            _initialise(config, defs, users)
        else:
            backend, template = _template(config, files, users, base)
            url = stack.enter_context(contextlib.contextmanager(conftest.database_copy)(
                {backend: template}, backend, tmp_path, f"small-{uuid.uuid4().hex[:8]}"))
            config = replace(config, database_url=url)
        app = create_app(config, defs, testing=True)
        try:
            yield SmallApp(app, app.test_client())
        finally:
            with app.app_context():
                db.engine.dispose()
