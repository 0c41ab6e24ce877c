"""The filter builder of lists: the operators and the input of each kind of field, rows to and from a
query (a label or a name typed without JavaScript becomes the stored value), and the applied filter
read as a sentence in labels and display values."""

from __future__ import annotations

import re

from ...definitions.model import FieldDef, TableDef
from ...fieldtypes import SYS_ID
from ...query import OPERATORS, AnyOf, Query, QueryError, Term
from ...query.conditions import All, Not, terms_of
from ...query.dateparts import DatePart
from ...query.meaning import kind_of
from ...query.operators import Operator
from ...typedinput import NotMeant, meant_value
from ..auth import records, runtime
from ..serialize import display_names, value_words

# What ServiceNow's dynamic values read as in a sentence.
DYNAMIC_WORDS = {"gs.getuserid()": "me", "gs.getusername()": "me", "gs.nowdatetime()": "now",
                 "gs.beginningoftoday()": "the start of today", "gs.endoftoday()": "the end of today"}


# The operators offered per kind of field, in the order shown (names in caseloom.query OPERATORS; an
# encoded BETWEEN or ON is read as its two comparisons: a range is two rows). Adding a kind is one row
# here and one in INPUT_KINDS.
SAME = ("sameas", "nsameas")  # compared with another field of the record, chosen from those of its kind
ORDERED_FIELD = ("gt_field", "ge_field", "lt_field", "le_field")
KIND_OPERATORS = {
    "choice": ("eq", "ne", "in", "notin", "empty", "notempty", *SAME),
    "number_choice": ("eq", "ne", "in", "notin", "lt", "le", "gt", "ge", "empty", "notempty", *SAME, *ORDERED_FIELD),
    "reference": ("eq", "ne", "in", "notin", "empty", "notempty", *SAME),
    "text": ("like", "notlike", "startswith", "endswith", "eq", "ne", "empty", "notempty", *SAME),
    "number": ("eq", "ne", "lt", "le", "gt", "ge", "empty", "notempty", *SAME, *ORDERED_FIELD),
    "date": ("eq", "ne", "lt", "le", "gt", "ge", "empty", "notempty", *SAME, *ORDERED_FIELD),
    "boolean": ("eq", "ne", *SAME),
}


# A field type's input (FieldType.input) -> its kind of filter row; any other input is text.
INPUT_KINDS = {"reference": "reference", "number": "number", "decimal": "number", "date": "date",
               "datetime-local": "date", "checkbox": "boolean"}


ANY_FIELD = tuple(name for name, op in OPERATORS.items() if op.change is None)  # a row with no field yet


def field_kind(field: FieldDef | None) -> str:
    """The kind of filter row a field gets: its operators and its value input follow from it."""
    if field is None:
        return ""
    if field.choices:
        return "number_choice" if field.choice_kind == "integer" else "choice"  # ordered, as ServiceNow offers
    return INPUT_KINDS.get(field.ftype.input, "text")


def operators_for(field: FieldDef | None) -> list[Operator]:
    return [OPERATORS[name] for name in KIND_OPERATORS.get(field_kind(field), ANY_FIELD)]


def filter_rows(tdef: TableDef, query: Query) -> list[dict]:
    """The filter builder's rows for a query: [{join, field, op, value}], AND groups of OR terms."""
    node = query.where
    if node is None:
        return []
    groups = list(node.items) if isinstance(node, All) else [node]
    rows = []
    for group in groups:
        terms = list(group.items) if isinstance(group, AnyOf) else [group]
        for i, term in enumerate(terms):
            if not isinstance(term, Term) or isinstance(term.value, DatePart):
                return []  # not expressible as rows (e.g. ^NQ, a date part); the encoded text is still shown
            value = ",".join(map(str, term.value)) if isinstance(term.value, list) else (term.value or "")
            rows.append({"join": "or" if i else "and", "field": term.field, "op": term.op, "value": value})
    return rows


def blank_row(join: str = "and") -> dict:
    """A row with no field yet, joined by `join`."""
    return {"join": join, "field": "", "op": "eq", "value": ""}


def row_redrawn(tdef: TableDef, rows: list[dict], asked, filter_url: str) -> str | None:
    """The HTML of the row whose field changed (`row_for=INDEX`: drawn again for the new field, for htmx
    to swap in); None when no row asks to be redrawn."""
    from flask import render_template

    if not (asked.get("row_for", "").isdigit() and int(asked["row_for"]) < len(rows)):
        return None
    index = int(asked["row_for"])
    view = row_views(tdef, [redrawn(tdef, rows[index])], start=index)[0]
    return render_template("_filter_row.html", r=view, tdef=tdef, fields=filter_fields(tdef), filter_url=filter_url)


def rows_edited(rows: list[dict], form, asked) -> bool:
    """A row removed (`remove_row=INDEX`) or added (`add_row=and|or`) in `rows`, never leaving none; False
    when the post asked for neither (it runs the rows)."""
    if asked.get("remove_row", "").isdigit():
        del rows[int(asked["remove_row"]):int(asked["remove_row"]) + 1]
    if form.get("add_row"):
        rows.append(blank_row("or" if form["add_row"] == "or" else "and"))
    if not (form.get("add_row") or asked.get("remove_row")):
        return False
    rows[:] = rows or [blank_row()]
    return True


def posted_rows(form) -> list[dict]:
    """The rows as the filter form posted them. Aligned lists (one per row): f_join, f_field, f_op,
    f_value; by row index: f_values_<i> (the ticked choices of "is one of"), f_display_<i> (a reference
    typed by name) and f_for_<i> (the field the row's inputs were drawn for)."""
    rows = []
    for i, (join, field, op, value) in enumerate(zip(form.getlist("f_join"), form.getlist("f_field"),
                                                     form.getlist("f_op"), form.getlist("f_value"), strict=False)):
        rows.append({"join": join, "field": field, "op": op, "value": value, "values": form.getlist(f"f_values_{i}"),
                     "display": form.get(f"f_display_{i}", ""), "for": form.get(f"f_for_{i}")})
    return rows


def redrawn(tdef: TableDef, row: dict) -> dict:
    """A row whose field was changed: an operator the new field offers and no value of the old one."""
    if row.get("for") is None or row["for"] == row["field"]:
        return row
    ops = [op.name for op in operators_for(_field_at(tdef, row["field"]))]
    return row | {"op": row["op"] if row["op"] in ops else ops[0], "value": "", "values": [], "display": ""}


def row_views(tdef: TableDef, rows: list[dict], start: int = 0) -> list[dict]:
    """What the template draws per row: the operators and the value input its field's kind calls for,
    references by display value (read at once for every row)."""
    wanted: dict[str, set[str]] = {}
    for row in rows:
        field = _field_at(tdef, row["field"])
        if field is not None and field.type == "reference":
            wanted.setdefault(field.reference, set()).update(v for v in _items(row["value"]) if SYS_ID.match(v))
    names = display_names(records(), wanted)
    return [_row_view(tdef, start + i, row, names) for i, row in enumerate(rows)]


def _row_view(tdef: TableDef, index: int, row: dict, names: dict) -> dict:
    field = _field_at(tdef, row["field"])
    ops = operators_for(field)
    op = OPERATORS.get(row["op"])
    if op is None or op.change is not None:
        op = ops[0]
    elif op not in ops:  # a query may use any operator (`numberIN...`): the row offers it too
        ops = [*ops, op]
    view = dict(row, index=index, fdef=field, ops=ops, op=op.name, input=_input_of(field, op),
                label=_path_words(tdef, row["field"])[1] if row["field"] else "")
    if op.field:  # a value that names no field (the row held another operator's): the first field offered
        view["others"] = others = _comparable_fields(tdef, row["field"], field)
        named = bool(row["value"]) and _field_at(tdef, str(row["value"])) is not None
        view["value"] = row["value"] if named else others[0][0] if others else ""
        view["other_label"] = _path_words(tdef, view["value"])[1] if view["value"] else ""
    elif field is not None and field.choices:
        picked = (row.get("values") or _items(row["value"])) if op.list_value else [row["value"]]
        view["selected"] = {_quietly(field, v) for v in picked}
    elif field is not None and field.type == "reference":
        ids = _items(row["value"])
        view["display"] = row.get("display") or ", ".join(names.get((field.reference, v), v) for v in ids)
        view["value"] = row["value"] if all(SYS_ID.match(v) for v in ids) else ""  # a typed name: resolved on run
    elif view["input"] == "datetime-local":
        view["value"] = str(row["value"]).replace(" ", "T")
    return view


def _comparable_fields(tdef: TableDef, path: str, field: FieldDef | None) -> list[tuple[str, str]]:
    """The fields a row's field may be compared with (`sameas` and friends): the others of its kind the user may read."""
    if field is None:
        return []
    tables = runtime().defs.tables
    kind = kind_of(tables, field)
    return [(name, label) for name, label in filter_fields(tdef)
            if name != path and kind_of(tables, tdef.fields[name]) == kind]


def _input_of(field: FieldDef | None, op: Operator) -> str:
    """The value input a row draws: none, field (another field), select, multiselect, reference, references,
    boolean or an HTML input type."""
    if not op.takes_value:
        return "none"
    if op.field:
        return "field"
    kind = field_kind(field)
    if kind in ("choice", "number_choice"):
        return "multiselect" if op.list_value else "select"
    if kind == "reference":
        return "references" if op.list_value else "reference"
    if kind == "boolean":
        return "boolean"
    if kind == "number" and not op.list_value:
        return "number"
    if kind == "date" and not op.list_value:
        return field.ftype.input
    return "text"


def _items(value) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [v.strip() for v in str(value or "").split(",") if v.strip()]


def _quietly(field: FieldDef, text: str) -> str:
    """A choice's value for a typed value or label, or the text as it is (to show, not to query)."""
    try:
        return typed_value(field, text)
    except QueryError:
        return text


def _field_at(tdef: TableDef, path: str) -> FieldDef | None:
    return _path_words(tdef, path)[0] if path else None


def typed_value(field: FieldDef, text: str) -> str:
    """The stored value a person means by what they chose or typed (`typedinput.meant_value`: a choice by its
    value or label, a reference by its sys_id or display value); QueryError naming the field and the value
    when nothing has it. Other values stay as typed (their type is checked later)."""
    try:
        return meant_value(records(), field, "" if text is None else str(text).strip())  # a row's spaces are not meant
    except NotMeant as exc:
        raise QueryError(f"{field.label}: {exc}") from None


def _term_value(field: FieldDef | None, op: Operator, row: dict):
    """A row's value for its term: None, one value, or a list for "is one of"."""
    if not op.takes_value:
        return None
    if op.field:
        return str(row["value"] or "").strip()  # the other field's name, as the select posts it
    if op.list_value:
        items = row.get("values") or _items(row["value"])
        if field is not None and field.type == "reference" and not row["value"] and row.get("display"):
            items = _items(row["display"])
        return [typed_value(field, v) if field is not None else v for v in items]
    text = row["value"]
    if field is not None and field.type == "reference" and not text and row.get("display", "").strip():
        text = row["display"]
    return typed_value(field, text) if field is not None else text


def query_from_rows(tdef: TableDef, rows: list[dict], order: tuple = ()) -> Query:
    """The Query the filter builder's rows describe (the inverse of filter_rows): choices by label and
    references by name resolved to their values; QueryError naming the field otherwise."""
    groups: list[list[Term]] = []
    for row in rows:
        if not row["field"]:
            continue
        op = OPERATORS.get(row["op"])
        if op is None or op.change is not None:
            raise QueryError(f"unknown operator {row['op']!r}")
        term = Term(row["field"], op.name, _term_value(_field_at(tdef, row["field"]), op, row))
        if row["join"] == "or" and groups:
            groups[-1].append(term)
        else:
            groups.append([term])
    nodes = [g[0] if len(g) == 1 else AnyOf(tuple(g)) for g in groups]
    return Query(None if not nodes else nodes[0] if len(nodes) == 1 else All(tuple(nodes)), order)


def filter_fields(tdef: TableDef) -> list[tuple[str, str]]:
    """The fields the filter builder offers: those a query may name that the user may read."""
    service = records()
    return [(name, f.label) for name, f in tdef.fields.items()
            if f.ftype.queryable and service.can_read_path(tdef.name, name)]


def filter_sentence(tdef: TableDef, query: Query) -> str:
    """The filter as a person reads it: fields by label, choices by label, references by display value
    ("State is one of New, Open and Priority is 1 - Critical")."""
    def phrase(node, top: bool = False) -> str:
        if isinstance(node, All):
            return " and ".join(phrase(item) for item in node.items)
        if isinstance(node, AnyOf):
            text = " or ".join(phrase(item) for item in node.items)
            return text if top else f"({text})"
        if isinstance(node, Not):
            return f"not ({phrase(node.item, True)})"
        if not isinstance(node, Term):
            return ""
        field, label = _path_words(tdef, node.field)
        op = OPERATORS.get(node.op)
        words = op.label if op is not None else node.op
        if op is None or not op.takes_value:
            return f"{label} {words}"
        if op.field:
            return f"{label} {words} {_path_words(tdef, str(node.value))[1]}"
        if op.parts:  # "Opened at on Monday"
            return f"{label} {node.value.words}"
        if op.classes:  # a table by its label
            table = runtime().defs.tables.get(str(node.value))
            return f"{label} {words} {table.label if table is not None else node.value}"
        values = node.value if isinstance(node.value, (list, tuple)) else [node.value]
        return f"{label} {words} {', '.join(_value_words(field, v, names) for v in values)}"

    names = display_names(records(), _referenced(tdef, query))  # every sys_id the filter names, read at once
    text = phrase(query.where, True) if query.where is not None else ""
    for path, descending in query.order:
        _, label = _path_words(tdef, path)
        text += f"{'; ' if text else ''}ordered by {label}{' (descending)' if descending else ''}"
    return text[:1].upper() + text[1:]


def _path_words(tdef: TableDef, path: str):
    """The field a path ends at, and its labels joined as a person reads a dot-walk (`Account › Name`)."""
    defs = runtime().defs
    labels, current, field = [], tdef, None
    for part in path.split("."):
        field = current.field(part) if current is not None else None
        labels.append(field.label if field is not None else part)
        current = defs.tables.get(field.reference) if field is not None and field.reference else None
    return field, " › ".join(labels)


def _referenced(tdef: TableDef, query: Query) -> dict[str, set[str]]:
    """The sys_ids a filter compares references with, by the table they belong to."""
    wanted: dict[str, set[str]] = {}
    for term in terms_of(query.where):
        field = _path_words(tdef, term.field)[0] if isinstance(term, Term) else None
        if field is not None and field.type == "reference" and not getattr(OPERATORS.get(term.op), "field", False):
            values = term.value if isinstance(term.value, (list, tuple)) else [term.value]
            wanted.setdefault(field.reference, set()).update(str(v) for v in values if v and len(str(v)) == 32)
    return wanted


def _value_words(field, value, names: dict[tuple[str, str], str]) -> str:
    text = "" if value is None else str(value)
    if text.lower().startswith("javascript:"):
        call = text[len("javascript:"):].strip()
        return DYNAMIC_WORDS.get(call.lower()) or _period_words(call) or text
    return value_words(field, text, names) if text else "(empty)"


_PERIOD = re.compile(r"gs\.(beginningOf|endOf)([A-Z][a-z]+)([A-Z][a-z]+)?\(\)")
_DAYS = re.compile(r"gs\.daysAgo(Start|End)\((-?\d+)\)")


def _period_words(call: str) -> str | None:
    """A calendar period's dynamic value in words: `gs.beginningOfLastWeek()` as "the start of last week",
    `gs.daysAgoEnd(3)` as "the end of 3 days ago"."""
    found = _PERIOD.fullmatch(call)
    if found:
        edge, *period = found.groups()
        return f"the {'start' if edge == 'beginningOf' else 'end'} of {' '.join(p.lower() for p in period if p)}"
    found = _DAYS.fullmatch(call)
    if found:
        days = int(found.group(2))
        day = "today" if days == 0 else "yesterday" if days == 1 else f"{days} days ago"
        return f"the {found.group(1).lower()} of {day}"
    return None


def error_words(tdef: TableDef, message: str) -> str:
    """A query's error as a list says it: its leading field path by label (`opened_at: expected a date`
    as `Opened: expected a date`); any other message as it is."""
    path, colon, rest = message.partition(": ")
    if not colon or not path or " " in path or tdef.field(path.split(".")[0]) is None:
        return message
    field, label = _path_words(tdef, path)
    return f"{label}: {rest}" if field is not None else message
