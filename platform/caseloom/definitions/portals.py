"""Portals: from documents to PortalDefs, each table, field, role, condition and action checked."""

from __future__ import annotations

from .behaviour import _Checker
from .model import PortalDef, frozen_map
from .yamlsource import SourceDocument

RESERVED = frozenset({"api", "ui", "login", "logout", "static", "health", "metrics", "home"})


def build_portals(docs: list[SourceDocument], tables: dict, roles: dict, errors: list, actions: list,
                  properties: dict) -> dict[str, PortalDef]:
    portals: dict[str, PortalDef] = {}
    for doc in docs:
        check = _Checker(doc, tables, roles, errors, properties)
        spec = doc.data["portal"]
        where = ("portal",)
        name = spec["name"]
        if name in RESERVED or name in tables or name.endswith("_list"):
            check.error(where + ("name",), f"portal name {name!r} is taken by the platform's own addresses or a table")
            continue
        if name in portals:
            check.error(where + ("name",), f"portal {name!r} is already declared at {portals[name].location}")
            continue
        table = check.table(spec["table"], where + ("table",))
        check.roles_of(spec["roles"], where + ("roles",))
        if table is None:
            continue
        for key in ("list", "show"):
            for i, path in enumerate(spec.get(key, ())):
                check.field(table, path, where + (key, i))
        comment = table.field(spec["comment"])
        if comment is None or not comment.ftype.journal:
            check.error(where + ("comment",), f"{spec['comment']!r} is not a journal field of {table.name!r}")
        create = spec.get("create") or {}
        for i, field_name in enumerate(create.get("fields", ())):
            field = table.field(field_name)
            if field is None or field.system or not (field.stored or field.ftype.journal):
                check.error(where + ("create", "fields", i), f"{field_name!r} is not a field of {table.name!r} a "
                                                              "person can fill in")
        for field_name in create.get("values") or {}:
            if table.field(field_name) is None:
                check.error(where + ("create", "values", field_name), f"{field_name!r} is not a field of {table.name!r}")
        declared = {a.name for a in actions if a.table in (table.name, *check.ancestors(table))}
        for i, action in enumerate(spec.get("actions", ())):
            if action not in declared:
                check.error(where + ("actions", i), f"unknown action {action!r} of {table.name!r}")
        parent = spec.get("parent")
        if parent is not None:
            field = table.field(parent)
            if field is None or field.type != "reference":
                check.error(where + ("parent",), f"{parent!r} is not a reference field of {table.name!r}")
        portals[name] = PortalDef(
            name, spec["title"], tuple(spec["roles"]), table.name, spec["comment"],
            tuple(spec.get("list") or table.list_columns),
            check.encoded(table, spec.get("open"), where + ("open",)),
            check.encoded(table, spec.get("action_needed"), where + ("action_needed",)),
            tuple(spec.get("show") or ()), tuple(create.get("fields", ())), frozen_map(create.get("values") or {}),
            tuple(spec.get("actions", ())), parent, spec.get("description", ""), doc.where(*where))
    return portals
