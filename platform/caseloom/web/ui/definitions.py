"""The Definitions area (administrators): the definition files by kind, an editor validated as
you type, a review of every change before it is applied, history and restore, and the files
edited on disk. Every change, whichever page makes it, goes through `review` then `apply`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from flask import abort, flash, jsonify, redirect, render_template, request, url_for

from ...containsindex import ExtensionMissing
from ...definitions import DefinitionErrors
from ...definitions.changes import ChangePlan, FileChange, StaleChange, stored_path
from ...definitions.store import BadPath, candidate_set, check_path, version_of
from ...definitions.yamledit import YamlEditError
from ...migrate import DataLossRefused
from .. import live_definitions
from ..auth import rollback, runtime, safe_path
from . import admin_required, blueprint

# The Definitions area's tree: a heading per kind of file, in this order.
KIND_GROUPS = (
    ("Tables", ("table",)),
    ("Properties", ("properties",)),
    ("Lifecycles", ("lifecycle",)),
    ("Rules", ("rules",)),
    ("Actions", ("actions",)),
    ("Member lists", ("recipients_list", "declared_list", "member_list", "data")),
    ("Notifications", ("notifications",)),
    ("Time: schedules, SLAs and timers", ("schedules", "slas", "sla_flows", "timers")),
    ("Alert rules", ("alert_rules",)),
    ("Roles and access", ("roles", "access")),
    ("Menus", ("menu",)),
    ("Reports and dashboards", ("reports", "dashboard")),
    ("Demo data", ("demo",)),
)
# What a new file starts as, by its folder.
SKELETONS = {
    "tables": "table: {name}\nlabel: {label}\nfields:\n  name: {{type: string, max_length: 100, mandatory: true}}\n"
              "list: [name]\n",
    "properties": "properties:\n  {name}.enabled: {{type: boolean, default: false, description: What it turns on.}}\n",
    "reports": "reports:\n  {name}:\n    title: {label}\n    table: sys_user\n    type: bar\n    group_by: active\n",
}


def _path(path: str) -> str:
    try:
        return check_path(path)
    except BadPath as exc:
        abort(400, str(exc))


def _located(exc: DefinitionErrors) -> list[dict]:
    return [{**e.as_dict(), "path": stored_path(e.location)} for e in exc.errors]


@blueprint.get("/ui/definitions", endpoint="definitions")
@admin_required
def index():
    store = live_definitions.store()
    kinds = {f.path: f.kind for f in runtime().defs.files}
    files = store.listing()
    groups = []
    for label, members in KIND_GROUPS:
        items = [f for f in files if kinds.get(f["path"], "data" if f["path"].endswith(".csv") else "") in members]
        groups.append((label, items))
    known = {f["path"] for _, items in groups for f in items}
    groups.append(("Other", [f for f in files if f["path"] not in known]))
    disk = store.disk_changes(Path(runtime().config.definitions))
    stored = store.texts()
    on_disk = [{"path": p, "state": "new on disk" if p not in stored else "removed on disk" if t is None
                else "changed on disk"} for p, t in disk.items()]
    return render_template("definitions.html", groups=[g for g in groups if g[1]], disk=on_disk,
                           history=store.history(limit=8))


@blueprint.route("/ui/definitions/file/<path:path>", methods=["GET", "POST"], endpoint="definition_file")
@admin_required
def editor(path: str):
    """A file in the editor: GET the stored version (or a new file's skeleton); POST comes back
    from a review with the text as it was typed."""
    path = _path(path)
    stored = live_definitions.store().texts().get(path)
    if request.method == "POST":
        deleting = path in request.form.getlist("delete") and stored is not None
        text = stored if deleting else request.form.get("text", "")
        return _editor(path, text, request.form.get("base", version_of(stored)), stored)
    return _editor(path, stored if stored is not None else _skeleton(path), version_of(stored), stored)


def _editor(path: str, text: str, base: str, stored: str | None, errors: list[dict] | None = None,
            message: str | None = None, status: int = 200):
    errors = errors or []
    return render_template("definition_editor.html", path=path, text=text, base=base, exists=stored is not None,
                           errors=[e for e in errors if e["path"] == path],
                           elsewhere=[e for e in errors if e["path"] != path], message=message,
                           line=request.args.get("line", type=int)), status


def _skeleton(path: str) -> str:
    folder, _, name = path.partition("/")
    stem = Path(name).stem
    return SKELETONS.get(folder, "").format(name=stem, label=stem.replace("_", " ").capitalize())


@blueprint.post("/ui/definitions/new")
@admin_required
def new_file():
    path = request.form.get("path", "").strip()
    try:
        path = check_path(path)
    except BadPath as exc:
        flash(f"New file: {exc}, e.g. tables/u_widget.yaml", "error")
        return redirect(url_for("ui.definitions"))
    return redirect(url_for("ui.definition_file", path=path))


@blueprint.post("/ui/definitions/check/<path:path>")
@admin_required
def check(path: str):
    """Validation as you type: the errors of the whole set with this file's text, located."""
    path = _path(path)
    stored = live_definitions.store().texts()
    rollback()  # nothing is written: free the request's transaction (SQLite's write lock) while the set loads
    try:
        candidate_set(stored, {path: request.get_data(as_text=True)})
    except DefinitionErrors as exc:
        errors = _located(exc)
        return jsonify({"valid": False, "errors": [e for e in errors if e["path"] == path],
                        "elsewhere": [e for e in errors if e["path"] != path]})
    return jsonify({"valid": True, "errors": [], "elsewhere": []})


def _posted() -> tuple[dict[str, str | None], dict[str, str]]:
    """The files of a change as a form posts them: path, base and text in step; `delete` names
    the paths that are removed."""
    deleted = set(request.form.getlist("delete"))
    paths, bases_in, texts = (request.form.getlist(name) for name in ("path", "base", "text"))
    if not paths or not len(paths) == len(bases_in) == len(texts):
        abort(400, "a change posts path, base and text once for each file")
    changes: dict[str, str | None] = {}
    bases: dict[str, str] = {}
    for path, base, text in zip(paths, bases_in, texts, strict=True):
        path = _path(path)
        changes[path] = None if path in deleted else text.replace("\r\n", "\n")
        bases[path] = base
    return changes, bases


@blueprint.post("/ui/definitions/review", endpoint="definitions_review")
@admin_required
def review_posted():
    changes, bases = _posted()
    return review(changes, bases, action=request.form.get("action") or None, next_url=request.form.get("next"))


def review(changes: Mapping[str, str | None], bases: Mapping[str, str], *, action: str | None = None,
           next_url: str | None = None, message: str | None = None, status: int = 200):
    """The review of a change before it is applied: diff, schema changes, what would be lost. An
    invalid change goes back to the editor (one file) or lists its errors; nothing is applied."""
    try:
        try:
            plan = live_definitions.plan(changes, bases)
        except StaleChange as exc:
            bases = _current_bases(changes)
            message, status = str(exc), 409
            plan = live_definitions.plan(changes, bases)
    except DefinitionErrors as exc:
        rollback()
        errors = _located(exc)
        if len(changes) == 1:
            path, text = next(iter(changes.items()))
            stored = live_definitions.store().texts().get(path)
            return _editor(path, text or "", bases.get(path, version_of(stored)), stored, errors,
                           "Not valid: nothing was applied. Fix the errors below, then review again.", 422)
        return render_template("definition_review.html", plan=None, errors=errors, files=_hidden(changes, bases),
                               action=action, next_url=safe_path(next_url), message=message), 422
    builds = runtime().engine.dialect.name == "postgresql" and any(
        step.startswith(("create index", "build the")) for step in (plan.schema_changes if plan else ()))
    return render_template("definition_review.html", plan=plan, errors=[], files=_hidden(changes, bases),
                           action=action, next_url=safe_path(next_url), message=message, builds_later=builds), status


def review_rewrite(path: str, text: str, rewrite: Callable[[str], str], next_url: str, page: Callable[[int], object]):
    """The review of a file rewritten by a page (a layout editor, a declaration form): `rewrite`
    turns the stored text into the new one; one it cannot rewrite stays on the page, flashed."""
    try:
        new_text = rewrite(text)
    except YamlEditError as exc:
        flash(f"Not changed: {exc}.", "error")
        return page(422)
    return review({path: new_text}, {path: version_of(text)}, next_url=next_url)


def _current_bases(changes: Mapping[str, str | None]) -> dict[str, str]:
    stored = live_definitions.store().texts()
    return {path: version_of(stored.get(path)) for path in changes}


def _hidden(changes: Mapping[str, str | None], bases: Mapping[str, str]) -> list[dict]:
    """The change as hidden inputs, so Apply posts exactly what was reviewed."""
    return [{"path": path, "text": text or "", "deleted": text is None, "base": bases.get(path, "")}
            for path, text in changes.items()]


@blueprint.post("/ui/definitions/apply", endpoint="definitions_apply")
@admin_required
def apply_posted():
    changes, bases = _posted()
    action = "restore" if request.form.get("action") == "restore" else None
    next_url = safe_path(request.form.get("next"))
    try:
        done = live_definitions.apply(changes, accepted=request.form.getlist("accept"), bases=bases, action=action)
    except DataLossRefused as exc:
        rollback()
        message = ("Nothing was changed: this change loses data. Tick each loss to confirm it: "
                   + "; ".join(exc.losses))
        return review(changes, bases, action=action, next_url=next_url, message=message, status=409)
    except ExtensionMissing as exc:
        rollback()
        return review(changes, bases, action=action, next_url=next_url, message=f"Nothing was changed: {exc}",
                      status=409)
    except (StaleChange, DefinitionErrors):
        rollback()
        return review(changes, bases, action=action, next_url=next_url)
    flash(_summary(done))
    if next_url:
        return redirect(next_url)
    first = next(iter(changes))
    return redirect(url_for("ui.definition_file", path=first) if changes[first] is not None else url_for("ui.definitions"))


def _summary(done: ChangePlan) -> str:
    if done.empty:
        return "Nothing to apply: the files are the same as the current versions."
    files = ", ".join(f"{f.path} ({f.action}d)" for f in done.files)
    schema = "; ".join(done.schema_changes) or "no schema change"
    late = "".join(f" Not built yet: {note}." for note in done.not_built)
    return f"Applied {files}: {schema}. Every server process uses it from its next request.{late}"


@blueprint.get("/ui/definitions/disk", endpoint="definitions_disk")
@admin_required
def disk():
    """The files edited on disk, reviewed and applied the same way as an edit in the browser."""
    store = live_definitions.store()
    changes = store.disk_changes(Path(runtime().config.definitions))
    if not changes:
        flash("The definitions folder and the stored definitions are the same.")
        return redirect(url_for("ui.definitions"))
    return review(changes, _current_bases(changes))


@blueprint.get("/ui/definitions/history", endpoint="definitions_history")
@admin_required
def history():
    path = request.args.get("path") or None
    return render_template("definition_history.html", path=path,
                           entries=live_definitions.store().history(limit=200, path=path))


@blueprint.get("/ui/definitions/history/<int:entry_id>", endpoint="definitions_entry")
@admin_required
def history_entry(entry_id: int):
    entry = live_definitions.store().entry(entry_id) or abort(404)
    return render_template("definition_entry.html", entry=entry,
                           diff=FileChange(entry.path, entry.old_text, entry.new_text).diff())


@blueprint.post("/ui/definitions/history/<int:entry_id>/restore", endpoint="definitions_restore")
@admin_required
def restore(entry_id: int):
    """Restoring an earlier version is a change like any other: reviewed, then applied."""
    entry = live_definitions.store().entry(entry_id) or abort(404)
    changes = {entry.path: entry.restored_text}
    return review(changes, _current_bases(changes), action="restore")
