"""Where a script's text comes from: a recipients list holds the text itself, or a path under scripts/."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..config import Config
from .result import ScriptRefused

SCRIPT_PATH = re.compile(r"^[\w.\-/]+\.py$")


def script_source(service: Any, value: str, name: str, scripts_dir: str | Path | None = None) -> tuple[str, str]:
    """(source, filename) of a script field. A path such as `recipients/expiring.py` (or
    `scripts/recipients/expiring.py`) is read from the scripts folder (`scripts_dir`, else
    CASELOOM_SCRIPTS) and named by its path; any other text is the script itself, named `name`.
    `service` is the caller's unit of work; the text never depends on it today.
    Raises ScriptRefused for an empty field, a path outside the folder or a missing file."""
    text = (value or "").strip()
    if not text:
        raise ScriptRefused(name, 1, "there is no script to run (the script field is empty)")
    if "\n" in text or not SCRIPT_PATH.match(text):
        return value, name
    folder = Path(scripts_dir or Config.from_env().scripts)
    relative = text.removeprefix("scripts/") if folder.name == "scripts" else text
    path = (folder / relative).resolve()
    shown = str(folder / relative)
    if not path.is_relative_to(folder.resolve()):
        raise ScriptRefused(shown, 1, f"a script path must stay inside the scripts folder {folder}")
    try:
        return path.read_text(encoding="utf-8"), shown
    except (OSError, UnicodeDecodeError) as exc:
        raise ScriptRefused(shown, 1, f"cannot read the script: {getattr(exc, 'strerror', None) or exc}") from None
