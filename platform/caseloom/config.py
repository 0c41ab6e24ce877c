"""Configuration from the environment (contract section 3)."""

from __future__ import annotations

import os
import secrets
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

    @classmethod
    def from_env(cls, **overrides) -> Config:
        env = os.environ
        config = cls(
            database_url=env.get("CASELOOM_DATABASE_URL", cls.database_url),
            definitions=env.get("CASELOOM_DEFINITIONS", cls.definitions),
            scripts=env.get("CASELOOM_SCRIPTS", cls.scripts),
            queue=env.get("CASELOOM_QUEUE", cls.queue),
            secret_key=env.get("CASELOOM_SECRET_KEY"),
            instance=env.get("CASELOOM_INSTANCE", cls.instance),
            ui=env.get("CASELOOM_UI", cls.ui),
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
