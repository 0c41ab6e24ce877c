"""Forms and lists laid out without YAML (administrators): add, remove and reorder a list's
columns and a form's fields, and add a field to a table. Each page edits its state in the
browser round trip by round trip (no JavaScript needed), then writes the table's YAML file
(definitions.yamledit, comments kept) and hands it to the Definitions area's review and apply.
"""

from __future__ import annotations

import re
from dataclasses import replace

from flask import abort, render_template, request

from ...definitions.changes import declaring_file
from ...definitions.model import FieldDef, TableDef
from ...definitions.tables import with_default
from ...definitions.yamledit import set_entry, set_top_level
from ...fieldtypes import FIELD_TYPES, length_limit
from .. import live_definitions
from ..auth import runtime
from . import admin_required, blueprint
from .definitions import review_rewrite
from .lists import list_columns

FIELD_NAME = re.compile(r"[a-z][a-z0-9_]*")


def table_file(table: str) -> str | None:
    """The application file that declares a table, or None (the platform's own tables)."""
    defs = runtime().defs
    tdef = defs.tables.get(table)
    return declaring_file(defs, tdef.location) if tdef else None


def _declared(table: str) -> tuple[TableDef, str, str]:
    """(table, its file, the file's stored text); 404 for tables this cannot edit."""
    tdef = runtime().defs.tables.get(table) or abort(404)
    path = table_file(table)
    if path is None:
        abort(404, f"{table} is one of the platform's own tables; its layout is not edited here")
    text = live_definitions.store().texts().get(path)
    if text is None:
        abort(404, f"{path} is not among the stored definition files")
    return tdef, path, text


def _moved(items: list, op: str) -> list:
    """`up:i`, `down:i` or `remove:i` applied to a list (anything else leaves it as it is)."""
    verb, _, index = op.partition(":")
    if not index.isdigit() or int(index) >= len(items):
        return items
    i, items = int(index), list(items)
    if verb == "remove":
        del items[i]
    elif verb == "up" and i > 0:
        items[i - 1], items[i] = items[i], items[i - 1]
    elif verb == "down" and i < len(items) - 1:
        items[i + 1], items[i] = items[i], items[i + 1]
    return items


def _placeable(field) -> bool:
    """A field a form or list can show (not a sys field, a hidden one such as a password, or a journal:
    the form shows journals in its activity)."""
    return not field.system and not field.ftype.hidden and not field.ftype.journal


def _choosable(tdef: TableDef, taken: list[str]) -> list[tuple[str, str]]:
    return [(name, f.label) for name, f in tdef.fields.items() if _placeable(f) and name not in taken]


@blueprint.route("/ui/layout/<table>/list", methods=["GET", "POST"], endpoint="layout_list")
@admin_required
def list_layout(table: str):
    tdef, path, text = _declared(table)
    columns = request.form.getlist("col") if request.method == "POST" else list_columns(tdef)
    op = request.form.get("op", "")
    if op == "add" and tdef.field(request.form.get("add_col", "")) and request.form["add_col"] not in columns:
        columns.append(request.form["add_col"])
    columns = _moved(columns, op)

    def page(status: int = 200):
        return render_template("layout_list.html", tdef=tdef, path=path, columns=columns,
                               choosable=_choosable(tdef, columns)), status

    if op == "review":
        return review_rewrite(path, text, lambda t: set_top_level(t, "list", columns), f"/{table}_list.do", page)
    return page()


def _form_entries(tdef: TableDef) -> list[str]:
    """A form's layout as one sequence: `section:Title` starts a section, `field:name` places a field."""
    if not tdef.form:
        return [f"field:{n}" for n, f in tdef.fields.items() if _placeable(f)]
    entries = []
    for section in tdef.form:
        entries += [f"section:{section.title}"] if section.title else []
        entries += [f"field:{name}" for name in section.fields]
    return entries


def _form_value(tdef: TableDef, entries: list[str]) -> list:
    """The `form:` YAML of a layout sequence, the table's related lists kept."""
    items: list = []
    section = None
    for entry in entries:
        kind, _, value = entry.partition(":")
        if kind == "section":
            section = {"section": value, "fields": []}
            items.append(section)
        elif section is None:
            items.append(value)  # fields before the first section: the untitled top of the form
        else:
            section["fields"].append(value)
    return items + [{"related_list": {"table": r.table, "field": r.field, "label": r.label,
                                      **({"on": r.on} if r.on else {})}} for r in tdef.related_lists]


def _placed(entries: list[str], name: str, section: int) -> list[str]:
    """`field:name` at the end of the section whose heading is entries[section] (-1: the top)."""
    following = [i for i, e in enumerate(entries) if e.startswith("section:") and i > section]
    at = following[0] if following else len(entries)
    return entries[:at] + [f"field:{name}"] + entries[at:]


def _sections(entries: list[str]) -> list[tuple[int, str]]:
    """(index, title) of each section heading, the untitled top first."""
    return [(-1, "Top of the form")] + [(i, e.partition(":")[2]) for i, e in enumerate(entries)
                                        if e.startswith("section:")]


@blueprint.route("/ui/layout/<table>/form", methods=["GET", "POST"], endpoint="layout_form")
@admin_required
def form_layout(table: str):
    tdef, path, text = _declared(table)
    entries = request.form.getlist("entry") if request.method == "POST" else _form_entries(tdef)
    op = request.form.get("op", "")
    placed = [e.partition(":")[2] for e in entries if e.startswith("field:")]
    if op == "add" and request.form.get("add_field") in dict(_choosable(tdef, placed)):
        entries = _placed(entries, request.form["add_field"], request.form.get("add_to", -1, type=int))
    elif op == "add_section" and request.form.get("section_title", "").strip():
        entries = entries + [f"section:{request.form['section_title'].strip()}"]
    entries = _moved(entries, op)
    placed = [e.partition(":")[2] for e in entries if e.startswith("field:")]

    def page(status: int = 200):
        return render_template("layout_form.html", tdef=tdef, path=path, entries=[e.partition(":") for e in entries],
                               choosable=_choosable(tdef, placed), sections=_sections(entries)), status

    if op == "review":
        return review_rewrite(path, text, lambda t: set_top_level(t, "form", _form_value(tdef, entries)),
                          f"/{table}.do?sys_id=-1", page)
    return page()


@blueprint.route("/ui/layout/<table>/field", methods=["GET", "POST"], endpoint="layout_field")
@admin_required
def add_field(table: str):
    """Add a field to a table (name, type, label, choices or reference), optionally placed on the
    form and in the list."""
    tdef, path, text = _declared(table)
    entries = _form_entries(tdef)
    values = request.form if request.method == "POST" else {"section": str(_sections(entries)[-1][0])}
    back = request.values.get("back") or f"/{table}.do?sys_id=-1"

    def page(status: int = 200, errors: dict | None = None):
        return render_template("layout_field.html", tdef=tdef, path=path, values=values, errors=errors or {},
                               types=sorted(FIELD_TYPES), tables=sorted(runtime().defs.tables), back=back,
                               sections=_sections(entries), on_delete=ON_DELETE,
                               audited=request.method != "POST" or _audited(request.form)), status

    if request.method == "GET":
        return page()
    name, spec, errors = _field_spec(tdef, request.form)
    if errors:
        return page(422, errors)

    def build(current: str) -> str:
        new = set_entry(current, "fields", name, spec)
        if request.form.get("section", "") != "":
            new = set_top_level(new, "form", _form_value(tdef, _placed(entries, name, int(request.form["section"]))))
        if request.form.get("list"):
            new = set_top_level(new, "list", [*list_columns(tdef), name])
        return new

    return review_rewrite(path, text, build, back, page)


ON_DELETE = {"clear": "Clear the reference", "delete": "Delete this record too", "restrict": "Refuse the delete"}
MAX_LENGTH = 10_000_000  # as table.schema.json's field max_length
SPEC_ORDER = ("type", "label", "description", "to", "choices", "max_length", "default", "mandatory", "read_only",
              "index", "on_delete", "audit")  # the order the YAML line gives them


def _field_spec(tdef: TableDef, form) -> tuple[str, dict, dict[str, str]]:
    """(name, YAML of the field, errors by input) from the add-a-field form: the keys of a field's
    declaration an administrator sets most (README, table keys), each checked at its input."""
    name, ftype = form.get("name", "").strip(), form.get("type", "")
    errors = {}
    if not FIELD_NAME.fullmatch(name) or name.startswith("sys_"):
        errors["name"] = "Use lower-case letters, digits and _, starting with a letter and not with sys_ (e.g. u_tier)."
    elif tdef.field(name) is not None:
        errors["name"] = f"{tdef.label} already has a field named {name}."
    if ftype not in FIELD_TYPES:
        errors["type"] = "Choose a type."
    spec: dict = {"type": ftype}
    if form.get("label", "").strip():
        spec["label"] = form["label"].strip()
    if form.get("description", "").strip():
        spec["description"] = form["description"].strip()
    for flag in ("mandatory", "read_only", "index"):
        if form.get(flag):
            spec[flag] = True
    if not _audited(form):
        spec["audit"] = False
    if ftype == "choice":
        spec["choices"] = _parse_choices(form.get("choices", ""))
        if not spec["choices"]:
            errors["choices"] = "A choice field needs choices: one per line, as value = Label (or just a label)."
    if ftype == "reference":
        spec["to"] = form.get("to", "")
        if spec["to"] not in runtime().defs.tables:
            errors["to"] = "Choose the table the field refers to."
    if form.get("on_delete"):
        if form["on_delete"] not in ON_DELETE:
            errors["on_delete"] = "Choose what a delete of the referenced record does."
        elif ftype != "reference":
            errors["on_delete"] = "On delete applies to reference fields only."
        else:
            spec["on_delete"] = form["on_delete"]
    probe = FieldDef(name, ftype, tdef.name, name, reference=spec.get("to"),  # what the type's checks read
                     choices=tuple((v, str(label)) for v, label in (spec.get("choices") or {}).items())
                     ) if ftype in FIELD_TYPES else None
    length = form.get("max_length", "").strip()
    if length:
        if not length.isdigit() or not 1 <= int(length) <= MAX_LENGTH:
            errors["max_length"] = f"Give a whole number of characters from 1 to {MAX_LENGTH:,}."
        elif probe is not None and length_limit(probe) is None:
            errors["max_length"] = f"A field of type {ftype} has no length; leave it empty."
        else:
            spec["max_length"] = int(length)
    default = form.get("default", "").strip()
    if default and probe is not None and not errors.keys() & {"choices", "max_length"}:
        field, problem = with_default(replace(probe, max_length=spec.get("max_length")), default)
        if problem:
            errors["default"] = problem[0].upper() + problem[1:] + "."
        else:
            spec["default"] = default if field.default_now else _yaml_scalar(field.default)
    return name, {key: spec[key] for key in SPEC_ORDER if key in spec}, errors


def _audited(form) -> bool:
    """The Audited box: a hidden `off` comes before the box's `on`, so the last value says; a post
    without either (a client of the form's own) leaves the field audited, as the YAML's default."""
    given = form.getlist("audit")
    return not given or given[-1] != "off"


def _yaml_scalar(value):
    """A parsed default as YAML writes it: numbers and booleans as themselves, the rest as text."""
    return value if isinstance(value, bool | int | float) else str(value)


def _parse_choices(text: str) -> dict:
    """`value = Label` (or just `Label`) per line; values that are all whole numbers become integers."""
    pairs = []
    for line in text.splitlines():
        value, sep, label = line.partition("=")
        if not line.strip():
            continue
        if not sep:
            label, value = value, re.sub(r"[^a-z0-9]+", "_", value.strip().lower()).strip("_")
        pairs.append((value.strip(), label.strip() or value.strip()))
    if pairs and all(v.isdigit() for v, _ in pairs):
        return {int(v): label for v, label in pairs}
    return dict(pairs)
