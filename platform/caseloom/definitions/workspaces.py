"""Workspaces: the page of a record that has children through a reference, cross-checked."""

from __future__ import annotations

from .behaviour import _Checker
from .model import TableDef, WorkspaceDef
from .tables import label_from_name, resolve_path
from .yamlsource import SourceDocument

COMPUTED = ("children", "age")  # list view columns the workspace computes


def build_workspaces(docs: list[SourceDocument], tables: dict, roles: dict, errors: list, properties: dict,
                     member_lists: dict) -> dict[str, WorkspaceDef]:
    workspaces: dict[str, WorkspaceDef] = {}
    seen: dict[str, object] = {}
    for doc in docs:
        data = doc.data
        check = _Checker(doc, tables, roles, errors, properties)
        table = check.table(data["table"], ("table",))
        if table is None:
            continue
        if data["workspace"] in seen:
            check.error(("workspace",), f"workspace {data['workspace']!r} is already declared at "
                                        f"{seen[data['workspace']]}")
            continue
        seen[data["workspace"]] = doc.where("workspace")
        if any(w.table == table.name for w in workspaces.values()):
            check.error(("table",), f"table {table.name!r} already has a workspace")
            continue
        child_table = check.table(data.get("child_table", table.name), ("child_table",)) \
            if "child_table" in data else table
        if child_table is None:
            continue
        ok = _reference(check, child_table, data["children"], ("children",), table)
        for i, name in enumerate(data.get("summary", ())):
            ok &= check.field(table, name, ("summary", i)) is not None
        if "members" in data:
            field = check.field(table, data["members"], ("members",))
            if field is not None and (field.type != "reference" or not any(
                    m.table == field.reference for m in member_lists.values())):
                check.error(("members",), f"{data['members']!r} is not a reference to a member list's table (a "
                                          "recipients list): the members are that list's")
                ok = False
        if "attention" in data:
            field = check.field(child_table, data["attention"], ("attention",))
            if field is not None and field.type != "boolean":
                check.error(("attention",), f"{data['attention']!r} is a {field.type} field of {child_table.name!r}; "
                                            "attention is a boolean field of the children")
                ok = False
        for i, name in enumerate(data.get("communications", ())):
            field = check.field(table, name, ("communications", i))
            if field is not None and not field.ftype.journal:
                check.error(("communications", i), f"{name!r} is a {field.type} field; communications are journal "
                                                   "fields")
                ok = False
        for i, name in enumerate(data.get("timeline", ())):
            ok &= check.field(table, name, ("timeline", i)) is not None
        age_from = data.get("age_from", "sys_created_on")
        field = check.field(table, age_from, ("age_from",))
        if field is not None and field.type not in ("datetime", "date"):
            check.error(("age_from",), f"{age_from!r} is a {field.type} field; an age counts from a date-time")
            ok = False
        for i, path in enumerate(data.get("list", ())):
            if path not in COMPUTED and resolve_path(tables, table, path) is None:
                check.error(("list", i), f"list column {path!r} is not a field of {table.name!r} (nor one of the "
                                         f"computed columns {', '.join(COMPUTED)})")
                ok = False
        when = check.condition(table, data["when"], ("when",)) if "when" in data else None
        if not ok or ("when" in data and when is None):
            continue
        workspaces[data["workspace"]] = WorkspaceDef(
            name=data["workspace"], table=table.name, label=data.get("label") or label_from_name(data["workspace"]),
            children=data["children"], child_table=child_table.name, when=when,
            summary=tuple(data.get("summary", ())), members=data.get("members"),
            members_label=data.get("members_label"), attention=data.get("attention"),
            communications=tuple(data.get("communications", ())), timeline=tuple(data.get("timeline", ())),
            age_from=age_from, columns=tuple(data.get("list", ())), location=doc.where("workspace"))
    return workspaces


def _reference(check: _Checker, child_table: TableDef, name: str, where: tuple, parent: TableDef) -> bool:
    field = check.field(child_table, name, where)
    if field is None:
        return False
    if field.type != "reference" or field.reference not in (parent.name, *_ancestors(check.tables, parent)):
        check.error(where, f"{name!r} is not a reference from {child_table.name!r} to {parent.name!r}: the children "
                           "point at their parent through it")
        return False
    return True


def _ancestors(tables: dict, table: TableDef) -> list[str]:
    out, parent = [], table.extends
    while parent:
        out.append(parent)
        parent = tables[parent].extends
    return out
