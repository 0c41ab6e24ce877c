"""Member lists and declared lists: from documents to frozen objects, cross-checked."""

from __future__ import annotations

from ..query.conditions import QueryError
from .behaviour import _Checker
from .model import DeclaredList, MemberListDef, MemberType, frozen_map
from .yamlsource import SourceDocument


def build_member_lists(docs: list[SourceDocument], tables: dict, roles: dict, errors: list) -> dict[str, MemberListDef]:
    lists: dict[str, MemberListDef] = {}
    for doc in docs:
        check = _Checker(doc, tables, roles, errors)
        data = doc.data
        table = check.table(data["table"], ("table",))
        if table is None:
            continue
        for key in ("type_field", "conditions_field", "script_flag_field", "script_field"):
            if key in data:
                check.field(table, data[key], (key,))
        types = {}
        for name, spec in data["types"].items():
            where = ("types", name)
            target = check.table(spec["table"], where + ("table",))
            members = check.table(spec["members"], where + ("members",))
            if target is None or members is None:
                continue
            for key, owner, expected in (("list_field", members, table.name), ("member_field", members, target.name)):
                field = check.field(owner, spec[key], where + (key,))
                if field is not None and (field.type != "reference" or field.reference != expected):
                    check.error(where + (key,), f"{spec[key]!r} must be a reference to {expected!r}")
            if data.get("dynamic_field"):
                check.field(members, data["dynamic_field"], ("dynamic_field",))
            for i, key in enumerate(spec.get("match", ["sys_id"])):
                check.field(target, key, where + ("match", i))
            types[name] = MemberType(name, target.name, members.name, spec["list_field"], spec["member_field"],
                                     tuple(spec.get("match", ["sys_id"])), spec.get("result_key"))
        lists[data["member_list"]] = MemberListDef(
            data["member_list"], table.name, data["type_field"], frozen_map(types), data.get("conditions_field"),
            data.get("script_flag_field"), data.get("script_field"), data.get("dynamic_field"))
    return lists


def build_declared_lists(docs: list[SourceDocument], member_lists: dict[str, MemberListDef], errors: list,
                         read_file) -> list[DeclaredList]:
    """Lists declared in YAML; `import` names a CSV next to the YAML file (read with `read_file`)."""
    declared = []
    for doc in docs:
        data = doc.data
        name = data.get("member_list") or (next(iter(member_lists)) if len(member_lists) == 1 else None)
        mdef = member_lists.get(name)
        if mdef is None:
            doc_error = "no member-list definition" if not member_lists else "say which member_list it belongs to"
            errors.append(doc.error(("recipients_list",), doc_error))
            continue
        if data["type"] not in mdef.types:
            errors.append(doc.error(("type",), f"{data['type']!r} is not one of {', '.join(mdef.types)}"))
            continue
        text = None
        if "import" in data:
            text = read_file(doc.path, data["import"])
            if text is None:
                errors.append(doc.error(("import",), f"file {data['import']!r} not found next to {doc.path}"))
                continue
        if "conditions" in data:
            from ..query.conditions import parse_encoded

            try:
                parse_encoded(data["conditions"])
            except QueryError as exc:
                errors.append(doc.error(("conditions",), str(exc)))
        declared.append(DeclaredList(data["recipients_list"], name, data["type"], data.get("conditions"),
                                     data.get("script"), text, data.get("description", "")))
    return declared
