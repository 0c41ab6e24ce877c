"""Reference qualifiers and a records input's candidates: conditions that run as queries on records,
their values templates over the record being edited."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .model import FieldDef, TableDef, frozen_map
from .yamlsource import SourceDocument

# -- reference qualifiers --------------------------------------------------------------------------

# The names a qualifier's templates may use: the record being edited (`{{ record.account }}`).
QUALIFIER_NAMES = ("record",)


def with_qualifiers(specs: dict, order: list[str], tables: dict[str, TableDef], errors: list) -> dict[str, TableDef]:
    """The tables with each reference field's `qualifier` parsed (a condition on the referenced table,
    its templates read the record being edited). A table that extends another inherits its qualified
    fields unless it declares the field again."""
    from ..effects.build import Builder

    qualified: dict[int, FieldDef] = {}  # id of the field as first built -> the field with its qualifier
    out: dict[str, TableDef] = {}
    for name in order:
        doc, spec = specs[name]
        table = tables[name]
        fields = {}
        for field_name, field in table.fields.items():
            own = (spec.get("fields") or {}).get(field_name) or {}
            if "qualifier" in own:
                fields[field_name] = _qualified(doc, tables, table, field, own["qualifier"], Builder, errors)
                qualified[id(field)] = fields[field_name]
            else:
                fields[field_name] = qualified.get(id(field), field)
        out[name] = replace(table, fields=frozen_map(fields))
    return out


def _qualified(doc: SourceDocument, tables: dict, table: TableDef, field: FieldDef, data: Any, builder, errors: list
               ) -> FieldDef:
    at = ("fields", field.name, "qualifier")
    if field.type != "reference" or field.reference not in tables:
        if field.type != "reference":
            errors.append(doc.error(at, "qualifier applies to reference fields only"))
        return field
    check = builder(tables, tables[field.reference], {}, doc, errors, QUALIFIER_NAMES, template_table=table)
    return replace(field, qualifier=query_condition(check, data, at, "qualifier"))


def query_condition(check, data: Any, at: tuple, what: str):
    """A condition that runs as a query on records (a reference qualifier, an input's candidates), checked
    like any condition, its values possibly templates; a system property or a change operator (`changes`),
    which only a rule can evaluate, is refused at its place. None after reporting a mistake."""
    from ..query.conditions import PropertyTerm, QueryError, from_data, terms_of
    from ..query.operators import operator

    try:
        from_data(data)
    except QueryError:
        return check.condition(data, at, templates=True)  # reports it, at the part that does not parse
    for where, term in _terms_at(data, at):
        if "property" in term:
            check.error(where + ("property",), f"{what}: system property {term['property']!r} cannot be used: "
                                               f"a {what} is a query on records (use a field)")
            return None
        op = operator(str(term.get("op")))
        if op is not None and op.change is not None:
            check.error(where + ("op",), f"{what}: {op.name!r} compares a write with the record before it, "
                                         f"which only a rule can do; a {what} is a query on records")
            return None
    node = check.condition(data, at, templates=True)
    for term in terms_of(node):  # an encoded query's terms, located at its string
        if isinstance(term, PropertyTerm) or operator(term.op).change is not None:
            check.error(at, f"{what}: {term.op!r} cannot be used: a {what} is a query on records")
            return None
    return node


def _terms_at(data: Any, at: tuple) -> list[tuple[tuple, dict]]:
    """(where, term mapping) of each term of a YAML condition (an encoded query has no mappings)."""
    if not isinstance(data, dict):
        return []
    for key in ("all", "any"):
        if key in data:
            return [found for i, item in enumerate(data[key]) for found in _terms_at(item, at + (key, i))]
    if "not" in data:
        return _terms_at(data["not"], at + ("not",))
    return [(at, data)]

