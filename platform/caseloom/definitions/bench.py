"""The `bench:` kind: what `caseloom bench` measures, named in the application's own terms."""

from __future__ import annotations

from .demodata import check_after_values
from .model import BenchDef, DemoGenerator, TableDef, frozen_map
from .tables import resolve_path
from .yamlsource import DefinitionError, SourceDocument


def build_bench(docs: list[SourceDocument], tables: dict[str, TableDef], actions: list, properties: dict,
                errors: list[DefinitionError], roles: dict | None = None) -> BenchDef | None:
    if not docs:
        return None
    for extra in docs[1:]:
        errors.append(extra.error(("bench",), f"only one bench file is allowed (the first is {docs[0].path})"))
    doc = docs[0]
    spec = doc.data["bench"]
    roles = roles or {}
    check = _Checker(doc, tables, errors)
    names = {g["name"] for g in spec["generate"]}
    generators = []
    for i, gen in enumerate(spec["generate"]):
        if check.values(("bench", "generate", i), gen["table"], gen["values"]):
            check_after_values(doc, ("bench", "generate", i), tables[gen["table"]], gen["values"], errors)
            for field_name, value in gen["values"].items():
                if isinstance(value, dict) and "ref" in value and value["ref"] not in names:
                    errors.append(doc.error(("bench", "generate", i, "values", field_name),
                                            f"unknown generator {value['ref']!r}"))
        generators.append(DemoGenerator(gen["name"], gen["table"], frozen_map(gen["values"]), None, gen["per_unit"]))
    listed, parent = spec["list"], spec["parent"]
    check.values(("bench", "list"), listed["table"], listed["values"])
    check.action(("bench", "list", "action"), listed["table"], listed["action"], actions)
    if check.values(("bench", "parent"), parent["table"], parent["values"]):
        field = tables[parent["table"]].field(parent["list_field"])
        if field is None or field.reference != listed["table"]:
            errors.append(doc.error(("bench", "parent", "list_field"),
                                    f"{parent['list_field']!r} is not a reference from {parent['table']!r} "
                                    f"to {listed['table']!r}"))
    check.action(("bench", "create_children", "action"), parent["table"], spec["create_children"]["action"], actions)
    check.values(("bench", "sync"), parent["table"], spec["sync"]["values"])
    check.values(("bench", "close"), parent["table"], spec["close"]["values"])
    for name in spec.get("properties") or {}:
        if name not in properties:
            errors.append(doc.error(("bench", "properties", name), f"unknown system property {name!r}"))
    if spec["views"]["table"] not in tables:
        errors.append(doc.error(("bench", "views", "table"), f"unknown table {spec['views']['table']!r}"))
    customer = spec.get("customer") or {}
    for j, role in enumerate(customer.get("roles", ())):
        if role not in roles:
            errors.append(doc.error(("bench", "customer", "roles", j), f"unknown role {role!r}"))
    for name, value in (customer.get("values") or {}).items():
        if "sys_user" in tables and tables["sys_user"].field(name) is None:
            errors.append(doc.error(("bench", "customer", "values", name), f"table 'sys_user' has no field {name!r}"))
        elif isinstance(value, dict) and value.get("ref") not in names:
            errors.append(doc.error(("bench", "customer", "values", name), f"unknown generator {value.get('ref')!r}"))
    views_table = tables.get(spec["views"]["table"])
    for j, path in enumerate(spec["views"].get("group_by", ())):
        if views_table is not None and resolve_path(tables, views_table, path) is None:
            errors.append(doc.error(("bench", "views", "group_by", j),
                                    f"table {views_table.name!r} has no field {path!r}"))
    similar = spec["views"].get("similar")
    if views_table is not None and similar is not None and similar not in {s.name for s in views_table.similar}:
        errors.append(doc.error(("bench", "views", "similar"), f"{views_table.name!r} has no similar list {similar!r} "
                                f"(it has: {', '.join(s.name for s in views_table.similar) or 'none'})"))
    portal = spec["views"].get("portal")
    if portal is not None and not customer:
        errors.append(doc.error(("bench", "views", "portal"), "a portal benchmark needs a `customer` login to open it"))
    email = spec.get("email") or {}
    sender = email.get("sender")
    if sender:
        made = next((g for g in spec["generate"] if g["name"] == sender["ref"]), None)
        if made is None:
            errors.append(doc.error(("bench", "email", "sender", "ref"), f"unknown generator {sender['ref']!r}"))
        elif made["table"] in tables and tables[made["table"]].field(sender["field"]) is None:
            errors.append(doc.error(("bench", "email", "sender", "field"),
                                    f"table {made['table']!r} has no field {sender['field']!r}"))
    events = spec.get("events") or {}
    return BenchDef(
        generators=tuple(generators),
        list_table=listed["table"], list_values=frozen_map(listed["values"]), list_action=listed["action"],
        parent_table=parent["table"], parent_values=frozen_map(parent["values"]), list_field=parent["list_field"],
        create_action=spec["create_children"]["action"],
        create_inputs=frozen_map(spec["create_children"].get("inputs") or {}),
        sync_values=frozen_map(spec["sync"]["values"]), close_values=frozen_map(spec["close"]["values"]),
        views_table=spec["views"]["table"], properties=frozen_map(spec.get("properties") or {}),
        names=frozen_map({"list": listed["benchmark"], "create": spec["create_children"]["benchmark"],
                          "sync": spec["sync"]["benchmark"], "close": spec["close"]["benchmark"],
                          **({"email": email["benchmark"]} if email else {}),
                          **({"events": events["benchmark"]} if events else {})}),
        portal=portal, group_by=tuple(spec["views"].get("group_by", ())), customer_roles=tuple(customer.get("roles", ())),
        dashboard=spec["views"].get("dashboard"), search=spec["views"].get("search"),
        similar=spec["views"].get("similar"),
        customer_values=frozen_map(customer.get("values") or {}),
        email_count=email.get("count", 0), email_sender=(sender["ref"], sender["field"]) if sender else None,
        event_count=events.get("count", 0), event_keys=events.get("keys", 100), event_batch=events.get("batch", 1000),
    )


class _Checker:
    def __init__(self, doc: SourceDocument, tables: dict[str, TableDef], errors: list[DefinitionError]):
        self.doc, self.tables, self.errors = doc, tables, errors

    def values(self, where: tuple, table: str, values: dict) -> bool:
        """The table exists and every value names one of its fields."""
        tdef = self.tables.get(table)
        if tdef is None:
            self.errors.append(self.doc.error(where + ("table",), f"unknown table {table!r}"))
            return False
        for name, value in values.items():
            if tdef.field(name) is None:
                self.errors.append(self.doc.error(where + ("values", name), f"table {table!r} has no field {name!r}"))
            elif isinstance(value, dict) and "user" in value:  # the bench makes no demo users
                self.errors.append(self.doc.error(where + ("values", name, "user"),
                                                  "the bench has no demo users: give a literal value"))
        return True

    def action(self, where: tuple, table: str, name: str, actions: list) -> None:
        tables = {table}
        tdef = self.tables.get(table)
        while tdef is not None and tdef.extends:
            tables.add(tdef.extends)
            tdef = self.tables.get(tdef.extends)
        if not any(a.name == name and a.table in tables for a in actions):
            self.errors.append(self.doc.error(where, f"table {table!r} has no action {name!r}"))
