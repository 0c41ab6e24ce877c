"""The stored value a person means by what they chose or typed: a choice by its value or its label
("1 - Critical"), a reference by its sys_id or the display value of the record it points at ("Alex
Agent"). The list filter and bulk edit read rows typed this way, and the Table API reads a body so
with `sysparm_input_display_value=true`, as ServiceNow does."""

from __future__ import annotations

from typing import Any

from .definitions.model import FieldDef
from .fieldtypes import SYS_ID
from .query.dynamic import is_dynamic
from .query.nodes import Query, Term


class NotMeant(ValueError):
    """Nothing has the value typed; the message says why, without the field (the caller names it)."""


def meant_value(service: Any, field: FieldDef, text: Any) -> Any:
    """The stored value for `text` typed into `field`: a choice's value for its value or label (any case), a
    reference's sys_id for a sys_id or the display value of exactly one record the user may read (a name
    typed names records, with no qualifier narrowing them, as a filter or a bulk edit does), each typed with
    spaces around it or not. Other fields' values, and empty or dynamic ones, are returned as they are: their
    type is checked where they are used. Raises NotMeant when no choice or no single record has it."""
    if not isinstance(text, str) or not (field.choices or field.type == "reference"):
        return text  # as it is: a text's spaces are its own
    text = text.strip()
    if not text or is_dynamic(text):
        return text
    if field.choices:
        for value, label in field.choices:
            if text == str(value) or text.casefold() == str(label).casefold():
                return str(value)
        labels = ", ".join(str(label) for _, label in field.choices)
        raise NotMeant(f"{text!r} is not one of the choices ({labels})")
    if field.type == "reference" and not SYS_ID.match(text):
        return _record_named(service, field, text)
    return text


def _record_named(service: Any, field: FieldDef, text: str) -> str:
    target = service.defs.tables[field.reference]
    noun = target.label.lower()
    if not target.display:
        raise NotMeant(f"choose the {noun} from the list (by its sys_id): {target.name} has no display field")
    rows = service.query(target.name, Query(Term(target.display, "eq", text)), ["sys_id"], 2)
    if not rows:
        raise NotMeant(f"no {noun} named {text!r}")
    if len(rows) > 1:
        raise NotMeant(f"more than one {noun} is named {text!r}: choose one by its sys_id")
    return rows[0]["sys_id"]


def meant_values(service: Any, table: str, values: dict) -> dict:
    """A record's values typed as display values (the Table API's `sysparm_input_display_value=true`): each
    field's `meant_value`, other keys as they are; RecordError naming the first field nothing has."""
    from .records import RecordError

    tdef = service.defs.tables[table]
    out = {}
    for name, value in values.items():
        field = tdef.field(name) if isinstance(name, str) else None
        try:
            out[name] = meant_value(service, field, value) if field is not None else value
        except NotMeant as exc:
            raise RecordError(name, str(exc)) from None
    return out
