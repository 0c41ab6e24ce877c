"""A Caseloom app on a small definitions folder of a test's own, on the test's fresh database (SQLite,
and PostgreSQL when CASELOOM_TEST_POSTGRES_URL is set): behaviour the shipped application does not
show, from a few lines of YAML. `caseloom init --force` replaces the template's application tables."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from werkzeug.security import generate_password_hash

from caseloom.bootstrap import initialise
from caseloom.config import Config
from caseloom.definitions import load_folder
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


@contextmanager
def small_app(config: Config, tmp_path: Path, files: dict[str, str],
              users: dict[str, list[str]]) -> Iterator[SmallApp]:
    """An app on `files` (paths in a definitions folder -> YAML) with `users` (name -> roles; each
    user's password is its name)."""
    from caseloom.web import create_app, db

    folder = write_folder(tmp_path / "small-definitions", files)
    defs = load_folder(folder)
    config = replace(config, definitions=str(folder))
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
    app = create_app(config, defs, testing=True)
    try:
        yield SmallApp(app, app.test_client())
    finally:
        with app.app_context():
            db.engine.dispose()
