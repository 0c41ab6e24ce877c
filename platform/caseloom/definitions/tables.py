"""Turn table documents into TableDefs: inheritance, sys fields and cross-references."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..fieldtypes import FieldValueError, moment_types
from .model import SYS_FIELDS, FieldDef, FormSection, NumberDef, RelatedList, TableDef, frozen_map
from .yamlsource import SourceDocument

_SYS_TYPES = {
    "sys_id": ("string", 32, "Sys ID"),
    "sys_class_name": ("string", 80, "Class"),
    "sys_created_on": ("datetime", None, "Created"),
    "sys_created_by": ("string", 40, "Created by"),
    "sys_updated_on": ("datetime", None, "Updated"),
    "sys_updated_by": ("string", 40, "Updated by"),
    "sys_mod_count": ("integer", None, "Updates"),
}


def _sys_fields(table: str) -> dict[str, FieldDef]:
    return {
        name: FieldDef(name, ftype, table, label, read_only=True, max_length=length, system=True)
        for name, (ftype, length, label) in ((n, _SYS_TYPES[n]) for n in SYS_FIELDS)
    }


def label_from_name(name: str) -> str:
    return name.replace("_", " ").strip().capitalize()


def build_tables(docs: list[SourceDocument], errors: list, qualify: Callable | None = None) -> dict[str, TableDef]:
    """The tables, each reference's `qualifier` parsed by `qualify` (definitions.qualifiers, which needs the
    effects' condition builder: passed in, so the tables do not import the effects that import them)."""
    specs: dict[str, tuple[SourceDocument, dict]] = {}
    additions: dict[str, list[SourceDocument]] = {}
    twice: set[str] = set()
    for doc in docs:
        name = doc.data["table"]
        if name in specs:
            first = specs[name][0].where("table")
            if specs[name][1].get("system") and not doc.data.get("system"):
                if _addition(doc, first, errors):
                    additions.setdefault(name, []).append(doc)
                continue
            errors.append(doc.error(("table",), f"table {name!r} is already defined at {first}"))
            twice.add(name)
            continue
        specs[name] = (doc, doc.data)
    for name in twice:  # neither is the table: what names it is not checked against either one
        del specs[name]
    order = _inheritance_order(specs, errors)
    tables: dict[str, TableDef] = {}
    for name in order:
        doc, spec = specs[name]
        parent = tables.get(spec.get("extends")) if spec.get("extends") else None
        tables[name] = _add_fields(_build_table(doc, spec, parent, errors), additions.get(name, ()), errors)
    for name in order:
        _check_references(specs[name][0], tables[name], tables, errors)
    _check_addresses(specs, errors)
    return qualify(specs, order, tables, errors) if qualify else tables


ADDABLE = frozenset({"table", "fields", "list", "form"})  # what an application may give a platform table


def _addition(doc: SourceDocument, first: str, errors: list) -> bool:
    """An application's document naming a platform table adds fields to it (and may set its list and
    form); anything else it says is an error naming the key."""
    extra = sorted(set(doc.data) - ADDABLE)
    for key in extra:
        errors.append(doc.error((key,), f"{doc.data['table']!r} is a platform table (defined at {first}): an "
                                        f"application may add fields to it and set its list and form, not {key!r}"))
    return not extra


def _add_fields(tdef: TableDef, docs, errors: list) -> TableDef:
    """A platform table with the fields (list, form) applications add to it."""
    for doc in docs:
        fields = dict(tdef.fields)
        for field_name, fspec in (doc.data.get("fields") or {}).items():
            if field_name in fields:
                errors.append(doc.error(("fields", field_name), f"{tdef.name!r} already has a field {field_name!r}: "
                                                                "an application adds fields, it does not change them"))
                continue
            fields[field_name] = _build_field(doc, tdef.name, field_name, fspec, errors)
        form, related = _build_form(doc.data.get("form") or ())
        tdef = replace(tdef, fields=frozen_map(fields), list_columns=tuple(doc.data.get("list") or tdef.list_columns),
                       form=form or tdef.form, related_lists=related or tdef.related_lists)
    return tdef


def _check_addresses(specs: dict, errors: list) -> None:
    """`/{table}_list.do` is a table's list and `/{table}.do` a form, so a table named `x_list`
    when `x` exists would share its address with x's list: one of the two pages could not be reached."""
    for name, (doc, _) in specs.items():
        if name.endswith("_list") and name[:-len("_list")] in specs:
            other = name[:-len("_list")]
            errors.append(doc.error(("table",), f"table name {name!r} is ambiguous: /{name}.do would be both its form "
                                                f"and the list of table {other!r} (defined at "
                                                f"{specs[other][0].where('table')}); choose another name"))


def _inheritance_order(specs: dict, errors: list) -> list[str]:
    """Parents before children; unknown parents and cycles are errors."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, trail: tuple[str, ...]) -> bool:
        if state.get(name) == "done":
            return True
        doc, spec = specs[name]
        if name in trail:
            errors.append(doc.error(("extends",), "tables extend each other in a cycle: " + " -> ".join((*trail, name))))
            return False
        parent = spec.get("extends")
        if parent and parent not in specs:
            errors.append(doc.error(("extends",), f"extends unknown table {parent!r}"))
            return False
        if parent and not visit(parent, (*trail, name)):
            return False
        state[name] = "done"
        order.append(name)
        return True

    for name in specs:
        visit(name, ())
    return order


def _build_table(doc: SourceDocument, spec: dict, parent: TableDef | None, errors: list) -> TableDef:
    name = spec["table"]
    fields: dict[str, FieldDef] = dict(parent.fields) if parent else _sys_fields(name)
    for field_name, fspec in (spec.get("fields") or {}).items():
        where = ("fields", field_name)
        inherited = fields.get(field_name)
        built = _build_field(doc, inherited.table if inherited else name, field_name, fspec, errors)
        if inherited is not None and not _same_storage(inherited, built):
            errors.append(doc.error(where, f"field {field_name!r} is inherited from {inherited.table!r} as "
                                           f"{inherited.type}; an override may change its label, default, "
                                           "choices and flags, not how it is stored"))
            continue
        fields[field_name] = built
    number = spec.get("number")
    form, related = _build_form(spec.get("form") or ())
    table = TableDef(
        name=name,
        label=spec.get("label") or label_from_name(name),
        extends=spec.get("extends"),
        root=parent.root if parent else name,
        fields=frozen_map(fields),
        number=NumberDef(number["prefix"], number.get("digits", 7), number.get("start", 1001)) if number
        else (parent.number if parent else None),
        display=spec.get("display") or (parent.display if parent else None),
        list_columns=tuple(spec.get("list") or (parent.list_columns if parent else ())),
        form=form or (parent.form if parent else ()),
        related_lists=related or (parent.related_lists if parent else ()),
        indexes=tuple(tuple(ix) for ix in spec.get("indexes", ())),
        description=spec.get("description", ""),
        system=bool(spec.get("system")),
        audit=spec.get("audit", parent.audit if parent else True),
        text_index=tuple(spec.get("text_index") or (parent.text_index if parent else ())),
        contains_index=tuple(spec.get("contains_index") or ()),
        location=doc.where("table"),
    )
    for field_name in spec.get("fields") or {}:
        field = table.fields.get(field_name)
        if field is not None and field.fill is not None:
            errors.extend(doc.error(("fields", field_name, "fill") + at, message)
                          for at, message in _fill_problems(table, field))
    return table


def _fill_problems(table: TableDef, field: FieldDef) -> list[tuple[tuple, str]]:
    """What is wrong with a field's `fill: {from, where}`: (the key under `fill`, why) for each problem."""
    from ..query.conditions import QueryError, fields_of, parse_encoded
    from ..query.meaning import bind_fields

    source_name, where = field.fill
    source = table.field(source_name)
    if source is None or source_name == field.name:
        return [(("from",), f"fill from {source_name!r}: name another field of {table.name!r}")]
    if not field.stored or field.system or not source.stored or not _same_storage(field, source):
        return [(("from",), f"fill from {source_name!r}: {field.name!r} is a {field.type} field and "
                            f"{source_name!r} a {source.type} field; a fill copies a value of the same type")]
    if not where.strip():
        return []
    try:
        query = parse_encoded(where)
        walked = [path for path in fields_of(query.where) if "." in path]
        if query.order or walked:
            raise QueryError("a fill's condition reads the row's own fields, with no ORDERBY and no dot-walk"
                             + (f" ({walked[0]})" if walked else ""))
        bind_fields(query.where, {table.name: table}, table)
    except QueryError as exc:
        return [(("where",), f"fill where: {exc}")]
    return []


def _same_storage(a: FieldDef, b: FieldDef) -> bool:
    if a.system or not a.stored or not b.stored:
        return False
    col_a, col_b = a.ftype.column(a), b.ftype.column(b)
    return type(col_a) is type(col_b) and a.reference == b.reference


def _build_field(doc: SourceDocument, table: str, name: str, spec: dict, errors: list) -> FieldDef:
    where = ("fields", name)
    choices = tuple((value, str(label)) for value, label in (spec.get("choices") or {}).items())
    field = FieldDef(
        name=name,
        type=spec["type"],
        table=table,
        label=spec.get("label") or label_from_name(name),
        mandatory=bool(spec.get("mandatory")),
        read_only=bool(spec.get("read_only")),
        max_length=spec.get("max_length"),
        choices=choices,
        reference=spec.get("to"),
        description=spec.get("description", ""),
        index=spec.get("index"),
        on_delete=spec.get("on_delete") or ("delete" if spec.get("mandatory") else "clear"),
        fill=(spec["fill"]["from"], spec["fill"].get("where", "")) if "fill" in spec else None,
        audit=spec.get("audit", True),
    )
    field = _with_create_values(doc, field, spec, errors)
    if "on_delete" in spec and field.type != "reference":
        errors.append(doc.error(where + ("on_delete",), "on_delete applies to reference fields only"))
    if "default" not in spec:
        return field
    field, problem = with_default(field, spec["default"])
    if problem:
        errors.append(doc.error(where + ("default",), problem))
    return field


NOW = "now"  # `default: now`: the moment a record is written, for the types that have one (FieldType.now)


def with_default(field: FieldDef, value: Any) -> tuple[FieldDef, str | None]:
    """The field with `default: value`, or the field as it was and why the value is refused (a value
    not of its type, not among its choices, or `now` on a type without a moment)."""
    if value == NOW:
        if field.ftype.now is not None:
            return replace(field, default_now=True), None
        return field, (f"default: now (the moment a record is created) applies only to fields of type "
                       f"{moment_types()}; field {field.name!r} is of type {field.type}: give it a value of its "
                       f"type, or no default")
    try:
        default = field.parse(value)
    except FieldValueError as exc:
        return field, f"default of {field.type} field {field.name!r}: {exc}"
    if field.choices and field.choice_label(default) is None:
        allowed = ", ".join(str(v) for v, _ in field.choices)
        return field, f"default {value!r} is not among the choices ({allowed})"
    return replace(field, default=default), None


def _with_create_values(doc: SourceDocument, field: FieldDef, spec: dict, errors: list) -> FieldDef:
    """`create_values`: what a client may give a read-only field when it creates a record (a candidate
    created directly as `proposed`), parsed and checked against the choices."""
    if "create_values" not in spec:
        return field
    where = ("fields", field.name, "create_values")
    if not field.read_only:
        errors.append(doc.error(where, "create_values applies to read-only fields (add read_only: true)"))
        return field
    values = []
    for i, raw in enumerate(spec["create_values"]):
        try:
            value = field.parse(raw)
        except FieldValueError as exc:
            errors.append(doc.error(where + (i,), f"create value {raw!r}: {exc}"))
            continue
        if field.choices and field.choice_label(value) is None:
            allowed = ", ".join(str(v) for v, _ in field.choices)
            errors.append(doc.error(where + (i,), f"create value {raw!r} is not among the choices ({allowed})"))
            continue
        values.append(value)
    return replace(field, create_values=tuple(values))


def _build_form(items: Any) -> tuple[tuple[FormSection, ...], tuple[RelatedList, ...]]:
    sections: list[FormSection] = []
    loose: list[str] = []
    related: list[RelatedList] = []
    for item in items:
        if isinstance(item, str):
            loose.append(item)
        elif "section" in item:
            sections.append(FormSection(item["section"], tuple(item["fields"])))
        else:
            rl = item["related_list"]
            related.append(RelatedList(rl["table"], rl["field"], rl.get("label") or label_from_name(rl["table"]),
                                       rl.get("on")))
    if loose:
        sections.insert(0, FormSection("", tuple(loose)))
    return tuple(sections), tuple(related)


def resolve_path(tables: dict, table: TableDef, path: str) -> FieldDef | None:
    """The field a dot-walked path such as `account.name` ends at, or None."""
    current = table
    parts = path.split(".")
    for i, part in enumerate(parts):
        field = current.field(part)
        if field is None:
            return None
        if i == len(parts) - 1:
            return field
        if field.type != "reference" or field.reference not in tables:
            return None
        current = tables[field.reference]
    return None


def _check_references(doc: SourceDocument, table: TableDef, tables: dict, errors: list) -> None:
    spec = doc.data
    for name, fspec in (spec.get("fields") or {}).items():
        target = fspec.get("to")
        if target and target not in tables:
            errors.append(doc.error(("fields", name, "to"), f"reference to unknown table {target!r}"))
    if spec.get("number") and table.field("number") is None:
        errors.append(doc.error(("number",), f"numbering needs a field named 'number' in {table.name!r} or a table it extends"))
    shown = table.field(spec["display"]) if spec.get("display") else None
    if spec.get("display") and shown is None:
        errors.append(doc.error(("display",), f"display field {spec['display']!r} is not a field of {table.name!r}"))
    elif shown is not None and (shown.ftype.hidden or not shown.stored):
        errors.append(doc.error(("display",), f"display field {shown.name!r} is a {shown.type} field, which is "
                                              f"never shown"))
    for i, path in enumerate(spec.get("list") or ()):
        if resolve_path(tables, table, path) is None:
            errors.append(doc.error(("list", i), f"list column {path!r} is not a field of {table.name!r}"))
    for i, item in enumerate(spec.get("form") or ()):
        _check_form_item(doc, table, tables, item, i, errors)
    for i, name in enumerate(spec.get("text_index") or ()):
        field = table.field(name)
        if field is None or not field.stored or field.type not in ("string", "text"):
            errors.append(doc.error(("text_index", i), f"text_index field {name!r} is not a string or text field of "
                                                       f"{table.name!r}"))
    for i, name in enumerate(spec.get("contains_index") or ()):
        field = table.field(name)
        if field is None or not field.stored or field.type not in ("string", "text"):
            errors.append(doc.error(("contains_index", i), f"contains_index field {name!r} is not a string or text "
                                                           f"field of {table.name!r}"))
    for i, index in enumerate(spec.get("indexes") or ()):
        for j, column in enumerate(index):
            field = table.field(column)
            if field is None or not field.stored:
                errors.append(doc.error(("indexes", i, j), f"index column {column!r} is not a stored field of {table.name!r}"))


def _check_form_item(doc, table, tables, item, i, errors) -> None:
    if isinstance(item, str):
        names = [(("form", i), item)]
    elif "section" in item:
        names = [(("form", i, "fields", j), f) for j, f in enumerate(item["fields"])]
    else:
        rl = item["related_list"]
        other = tables.get(rl["table"])
        if other is None:
            errors.append(doc.error(("form", i, "related_list", "table"), f"unknown table {rl['table']!r}"))
            return
        field = other.field(rl["field"])
        if "on" in rl:  # matched on a value of this record's: the two fields hold the same kind of value
            mine = table.field(rl["on"])
            if mine is None or not mine.stored:
                errors.append(doc.error(("form", i, "related_list", "on"),
                                        f"{rl['on']!r} is not a stored field of {table.name!r}"))
            elif field is None or not field.stored:
                errors.append(doc.error(("form", i, "related_list", "field"),
                                        f"{rl['field']!r} is not a stored field of {other.name!r}"))
            elif (field.type, field.reference) != (mine.type, mine.reference):
                errors.append(doc.error(("form", i, "related_list", "field"),
                                        f"{other.name}.{rl['field']} ({field.type}) cannot match "
                                        f"{table.name}.{rl['on']} ({mine.type}): the two must be of one type"))
        elif field is None or field.type != "reference":
            errors.append(doc.error(("form", i, "related_list", "field"),
                                    f"{rl['field']!r} is not a reference field of {other.name!r}"))
        return
    for where, name in names:
        if table.field(name) is None:
            errors.append(doc.error(where, f"form field {name!r} is not a field of {table.name!r}"))
