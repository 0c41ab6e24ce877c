"""Inbound e-mail actions: from documents to InboundActionDefs, every table, field, condition and
template checked where it is written."""

from __future__ import annotations

from .behaviour import _Checker
from .model import InboundActionDef, SenderDef, TableDef, frozen_map
from .yamlsource import SourceDocument

EMAIL_TABLE = "sys_email"
# what an inbound action's value templates may name: the e-mail and the sender's record
TEMPLATE_NAMES = ("email", "sender")


def build_inbound(docs: list[SourceDocument], tables: dict, roles: dict, errors: list,
                  properties: dict) -> tuple[InboundActionDef, ...]:
    actions: list[InboundActionDef] = []
    seen: dict[str, str] = {}
    for doc in docs:
        check = _Checker(doc, tables, roles, errors, properties)
        for i, spec in enumerate(doc.data["inbound_email"]):
            where = ("inbound_email", i)
            if spec["name"] in seen:
                check.error(where + ("name",), f"inbound e-mail action {spec['name']!r} is already declared at "
                                               f"{seen[spec['name']]}")
                continue
            seen[spec["name"]] = doc.where(*where, "name")
            action = _action(check, doc, where, spec, tables)
            if action is not None:
                actions.append(action)
    return tuple(sorted(actions, key=lambda a: (a.order, a.name)))


def _action(check: _Checker, doc: SourceDocument, where: tuple, spec: dict, tables: dict) -> InboundActionDef | None:
    table = check.table(spec["table"], where + ("table",))
    if table is None:
        return None
    email_table = tables.get(EMAIL_TABLE)
    condition = check.encoded(email_table, spec.get("condition"), where + ("condition",))
    comment = spec.get("comment")
    if spec["type"] == "reply":
        field = table.field(comment) if comment else None
        if comment is None:
            check.error(where, "a reply action names the journal field a reply is added to (`comment: comments`)")
        elif field is None or not field.ftype.journal:
            check.error(where + ("comment",), f"{comment!r} is not a journal field of {table.name!r}")
    elif comment is not None:
        check.error(where + ("comment",), "`comment` is for reply actions; a new record takes `values`")
    senders = tuple(_sender(check, tables, table, s, where + ("senders", j))
                    for j, s in enumerate(spec.get("senders", ())))
    values = field_values(check, table, spec.get("values") or {}, where + ("values",))
    closed, reopen, link = None, {}, None
    if "closed" in spec:
        if spec["type"] != "reply":
            check.error(where + ("closed",), "`closed` says what a reply to a closed record does: reply actions only")
        closed = check.encoded(table, spec["closed"]["condition"], where + ("closed", "condition"))
        reopen = field_values(check, table, spec["closed"].get("reopen") or {}, where + ("closed", "reopen"))
        link = spec["closed"].get("link")
        if link is not None:
            field = table.field(link)
            if field is None or field.type != "reference" or field.reference not in tables or \
                    field.reference not in (table.name, *check.ancestors(table)):
                check.error(where + ("closed", "link"), f"{link!r} is not a reference of {table.name!r} to its own "
                                                        "table (the new record's link to the closed one)")
    effects = check.effects(table, spec["effects"], where + ("effects",)) if spec.get("effects") else ()
    return InboundActionDef(spec["name"], table.name, spec["type"], spec.get("order", 100), condition, comment,
                            senders, frozen_map(values), closed, frozen_map(reopen), link, tuple(effects),
                            doc.where(*where))


def _sender(check: _Checker, tables: dict, table: TableDef, spec: dict, where: tuple) -> SenderDef:
    source = check.table(spec["table"], where + ("table",))
    if source is not None:
        field = source.field(spec["email"])
        if field is None or not field.stored:
            check.error(where + ("email",), f"{spec['email']!r} is not a field of {source.name!r}")
    return SenderDef(spec["table"], spec["email"], frozen_map(field_values(check, table, spec.get("values") or {},
                                                                      where + ("values",))))


def field_values(check: _Checker, table: TableDef, values: dict, where: tuple,
                 names: tuple = TEMPLATE_NAMES) -> dict:
    """Field values of the target table: literals, or templates naming `names` (`email` and `sender`)."""
    from ..templates import is_template, template_problems

    for name, value in values.items():
        field = table.field(name)
        if field is None:
            check.error(where + (name,), f"{name!r} is not a field of {table.name!r}")
        elif field.system:
            check.error(where + (name,), f"{name!r} is set by the platform")
        elif isinstance(value, str) and is_template(value):
            for problem in template_problems(value, names):
                check.error(where + (name,), problem)
    return values
