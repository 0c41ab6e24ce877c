"""Lifecycles, actions, rules and notifications: from documents to frozen objects, cross-checked."""

from __future__ import annotations

from typing import Any

from ..query.conditions import QueryError, fields_of, terms_of
from .model import (
    ActionDef,
    EffectDef,
    InputDef,
    LifecycleDef,
    MenuApplication,
    MenuModule,
    NotificationDef,
    RoleDef,
    RuleDef,
    StateDef,
    TableDef,
    frozen_map,
)
from .qualifiers import QUALIFIER_NAMES, query_condition
from .tables import label_from_name, resolve_path
from .yamlsource import SourceDocument


class _Checker:
    """Cross-reference checks that report located errors."""

    def __init__(self, doc: SourceDocument, tables: dict[str, TableDef], roles: dict[str, RoleDef], errors: list,
                 properties: dict | None = None):
        self.doc, self.tables, self.roles, self.errors = doc, tables, roles, errors
        self.properties = properties or {}

    def builder(self, table: TableDef, names: tuple[str, ...] | None = None, inputs: dict | None = None):
        from ..effects import Builder
        from ..effects.build import EFFECT_NAMES

        return Builder(self.tables, table, self.properties, self.doc, self.errors, names or EFFECT_NAMES, inputs)

    def error(self, where: tuple, message: str) -> None:
        self.errors.append(self.doc.error(where, message))

    def ancestors(self, tdef: TableDef) -> list[str]:
        """The tables `tdef` extends, nearest first."""
        found = []
        while tdef.extends:
            found.append(tdef.extends)
            tdef = self.tables[tdef.extends]
        return found

    def encoded(self, table: TableDef | None, text: Any, where: tuple):
        """An encoded-query condition on `table`, its fields and values checked (None: none given, or wrong)."""
        from ..query.conditions import parse_encoded
        from ..query.meaning import bind_fields

        if not text or table is None:
            return None
        try:
            query = parse_encoded(text)
            if query.order:
                raise QueryError("a condition takes no ORDERBY")
            bind_fields(query.where, self.tables, table)
        except QueryError as exc:
            self.error(where, f"condition: {exc}")
            return None
        return query.where

    def table(self, name: Any, where: tuple) -> TableDef | None:
        if name not in self.tables:
            self.error(where, f"unknown table {name!r}")
            return None
        return self.tables[name]

    def field(self, table: TableDef, path: str, where: tuple):
        field = resolve_path(self.tables, table, path)
        if field is None:
            self.error(where, f"{path!r} is not a field of {table.name!r}")
        return field

    def address(self, table: TableDef, path: str, where: tuple) -> None:
        """A recipients path: it must end on an e-mail (a user or contact reference ends on its `email`)."""
        from ..automation import recipient_path_problem

        problem = recipient_path_problem(self.tables, table, path)
        if problem:
            self.error(where, problem)

    def roles_of(self, names: list, where: tuple) -> tuple[str, ...]:
        for i, role in enumerate(names):
            if role not in self.roles:
                self.error(where + (i,), f"unknown role {role!r}")
        return tuple(names)

    def condition(self, table: TableDef, data: Any, where: tuple):
        """A condition Node, every field, property and choice value in it checked at its place."""
        return self.builder(table).condition(data, where)

    def effects(self, table: TableDef, items: list, where: tuple, inputs: dict | None = None
                ) -> tuple[EffectDef, ...]:
        """Effects (`inputs`: an action's inputs by name, which its effects may name)."""
        from ..effects import parse_effects

        return parse_effects(self.builder(table, inputs=inputs), items, where)


def _inputs(check: _Checker, table: TableDef, items: list, where: tuple) -> tuple[InputDef, ...]:
    inputs = []
    for i, spec in enumerate(items or ()):
        at = where + (i,)
        if "field" in spec:
            field = check.field(table, spec["field"], at + ("field",))
            if field is None:
                continue
            inputs.append(InputDef(field.name, spec.get("label") or field.label, field.type,
                                   bool(spec.get("mandatory")), True, field.reference, field.choices))
        else:
            kind = spec.get("type", "text")
            if kind == "records" and spec.get("table") and spec["table"] not in check.tables:
                check.error(at + ("table",), f"unknown table {spec['table']!r}")
            choices = tuple((k, str(v)) for k, v in (spec.get("choices") or {}).items())
            inputs.append(InputDef(spec["name"], spec.get("label") or label_from_name(spec["name"]), kind,
                                   bool(spec.get("mandatory")), False, spec.get("table"), choices,
                                   _candidates(check, table, spec, at)))
    return tuple(inputs)


def _candidates(check: _Checker, table: TableDef, spec: dict, at: tuple):
    """A records input's `candidates`: the records a person may pick, a condition on the input's table
    whose templates read the action's record (`{{ record.sys_id }}`)."""
    if "candidates" not in spec:
        return None
    if spec.get("type") != "records":
        check.error(at + ("candidates",), "candidates applies to inputs of type records only")
        return None
    target = check.tables.get(spec.get("table") or table.name)
    if target is None:
        return None  # its unknown table is reported
    from ..effects import Builder

    builder = Builder(check.tables, target, check.properties, check.doc, check.errors, QUALIFIER_NAMES,
                      template_table=table)
    return query_condition(builder, spec["candidates"], at + ("candidates",), "candidates condition")


CHANGE_OPERATORS = ("changes", "changesto", "changesfrom")


def _action(check: _Checker, table: TableDef, spec: dict, where: tuple, field: str | None = None,
            states: dict | None = None) -> ActionDef:
    from_states = None
    if "from" in spec:
        from_states = tuple(spec["from"])
        for i, value in enumerate(from_states):
            if states is not None and str(value) not in states:
                check.error(where + ("from", i), f"{value!r} is not a state of the lifecycle")
    if "to" in spec and states is not None and str(spec["to"]) not in states:
        check.error(where + ("to",), f"{spec['to']!r} is not a state of the lifecycle")
    for key in ("from", "to"):
        if key in spec and field is None:
            check.error(where + (key,), f"{key!r} belongs to lifecycle transitions; an action changes fields with "
                                        f"a `set` effect and checks the state with a `condition`")
    condition = check.condition(table, spec.get("condition"), where + ("condition",))
    for op in [t.op for t in terms_of(condition)]:
        if op in CHANGE_OPERATORS:
            check.error(where + ("condition",), f"{op!r} compares a write with the record before it: an action's "
                                                f"condition sees the record as it is (use it in a rule)")
    style = spec.get("style") or ("primary" if field else "secondary")
    inputs = _inputs(check, table, spec.get("inputs"), where + ("inputs",))
    return ActionDef(
        name=spec["name"], table=table.name, label=spec.get("label") or label_from_name(spec["name"]),
        roles=check.roles_of(spec.get("roles", []), where + ("roles",)),
        from_states=from_states, to_state=spec.get("to"), field=field if "to" in spec else None,
        condition=condition,
        refusal=spec.get("refusal", ""),
        inputs=inputs,
        effects=check.effects(table, spec.get("effects"), where + ("effects",), {i.name: i for i in inputs}),
        background=bool(spec.get("background")), confirm=bool(spec.get("confirm")), style=style,
        order=spec.get("order", 100),
        location=check.doc.where(*where),
    )


def build_lifecycles(docs: list[SourceDocument], tables: dict, roles: dict, errors: list,
                     properties: dict | None = None
                     ) -> tuple[dict[str, LifecycleDef], list[ActionDef]]:
    lifecycles: dict[str, LifecycleDef] = {}
    actions: list[ActionDef] = []
    for doc in docs:
        check = _Checker(doc, tables, roles, errors, properties)
        data = doc.data
        table = check.table(data["table"], ("table",))
        if table is None:
            continue
        field = table.field(data["field"])
        if field is None or field.type != "choice":
            check.error(("field",), f"{data['field']!r} is not a choice field of {table.name!r}")
            continue
        if table.name in lifecycles:
            check.error(("table",), f"table {table.name!r} already has a lifecycle")
            continue
        states: dict[str, StateDef] = {}
        for key, spec in data["states"].items():
            spec = spec or {}
            if field.choice_label(key) is None:
                check.error(("states", key), f"{key!r} is not a choice of {table.name}.{field.name}")
            for flag in ("read_only", "mandatory", "hidden"):
                for i, name in enumerate(spec.get(flag, ())):
                    check.field(table, name, ("states", key, flag, i))
            states[str(key)] = StateDef(key, field.choice_label(key) or str(key), tuple(spec.get("read_only", ())),
                                        tuple(spec.get("mandatory", ())), tuple(spec.get("hidden", ())))
        lifecycles[table.name] = LifecycleDef(data["lifecycle"], table.name, field.name, frozen_map(states))
        for i, spec in enumerate(data.get("transitions", ())):
            actions.append(_action(check, table, spec, ("transitions", i), field.name, states))
    return lifecycles, actions


def build_actions(docs: list[SourceDocument], tables: dict, roles: dict, errors: list,
                  properties: dict | None = None) -> list[ActionDef]:
    actions = []
    for doc in docs:
        check = _Checker(doc, tables, roles, errors, properties)
        for i, spec in enumerate(doc.data["actions"]):
            table = check.table(spec.get("table"), ("actions", i, "table"))
            if table is not None:
                actions.append(_action(check, table, spec, ("actions", i)))
    return actions


def check_unique_actions(actions: list[ActionDef], errors: list, docs: list[SourceDocument]) -> None:
    seen: dict[tuple[str, str], ActionDef] = {}
    for action in actions:
        key = (action.table, action.name)
        if key in seen:
            from .yamlsource import DefinitionError

            errors.append(DefinitionError(action.location, f"action {action.name!r} of {action.table!r} is declared "
                                                           f"twice (first at {seen[key].location})"))
        seen[key] = action


def build_rules(docs: list[SourceDocument], tables: dict, roles: dict, errors: list,
                properties: dict | None = None) -> list[RuleDef]:
    rules = []
    seen: dict[tuple[str, str], object] = {}  # (table, name): a rule's name says which one, in errors and logs
    for doc in docs:
        check = _Checker(doc, tables, roles, errors, properties)
        for i, spec in enumerate(doc.data["rules"]):
            where = ("rules", i)
            table = check.table(spec["table"], where + ("table",))
            if table is None:
                continue
            if (table.name, spec["name"]) in seen:
                check.error(where + ("name",), f"rule {spec['name']!r} of {table.name!r} is already declared at "
                                               f"{seen[table.name, spec['name']]}")
                continue
            seen[table.name, spec["name"]] = doc.where(*where, "name")
            rules.append(RuleDef(
                spec["name"], table.name, spec["when"], tuple(spec["on"]),
                check.condition(table, spec.get("condition"), where + ("condition",)),
                check.effects(table, spec["effects"], where + ("effects",)), spec.get("order", 100), doc.where(*where)))
    return rules


# The names a notification's subject and body may use.
NOTIFICATION_NAMES = ("record", "table", "notification", "user", "now")


def build_notifications(docs: list[SourceDocument], tables: dict, roles: dict, errors: list,
                        properties: dict | None = None, access: list | None = None,
                        warnings: list | None = None) -> dict[str, NotificationDef]:
    notifications: dict[str, NotificationDef] = {}
    seen: dict[str, object] = {}
    for doc in docs:
        check = _Checker(doc, tables, roles, errors, properties)
        for name, spec in doc.data["notifications"].items():
            where = ("notifications", name)
            if name in seen:
                check.error(where, f"notification {name!r} is already declared at {seen[name]}")
                continue
            seen[name] = doc.where(*where)
            table = check.table(spec["table"], where + ("table",))
            if table is None:
                continue
            recipients = spec.get("recipients") or {}
            roles_ = check.roles_of(recipients.get("roles", []), where + ("recipients", "roles"))
            for i, path in enumerate(recipients.get("fields", [])):
                check.address(table, path, where + ("recipients", "fields", i))
            children = None
            if "children" in recipients:
                kids = recipients["children"]
                at = where + ("recipients", "children")
                check.field(table, kids["reference"], at + ("reference",))
                check.address(table, kids["field"], at + ("field",))
                children = (kids["reference"], kids["field"], check.condition(table, kids.get("only"), at + ("only",)))
            texts = check.builder(table, NOTIFICATION_NAMES + (("child",) if children is not None else ()))
            for key in ("subject", "body"):
                made = texts.template(spec[key], where + (key,))
                if made is not None and children is not None:
                    _check_child_reads(check, table, spec[key], made, where + (key,))
            outside = [p for p in recipients.get("fields", []) if _address_table(tables, table, p) != "sys_user"]
            if "children" in recipients:
                outside.append(f"the children's {recipients['children']['field']}")
            if outside and access and warnings is not None:
                _hidden_fields_mailed(check, table, spec, where, outside, access, warnings)
            sent_field = spec.get("sent_field")
            if sent_field is not None and "." in sent_field:
                check.error(where + ("sent_field",), f"sent_field {sent_field!r} must be a field of {table.name!r} "
                                                     "itself, not a dot-walk")
            elif sent_field is not None:
                field = check.field(table, sent_field, where + ("sent_field",))
                if field is not None and field.type != "datetime":
                    check.error(where + ("sent_field",), f"sent_field {sent_field!r} must be a datetime field, "
                                                         f"not {field.type}")
            notifications[name] = NotificationDef(
                name, table.name, spec["subject"], spec["body"], tuple(spec.get("on", ())),
                check.condition(table, spec.get("condition"), where + ("condition",)), roles_,
                tuple(recipients.get("fields", [])), children, sent_field)
    return notifications


# What `child.FIELD` may read: the types whose stored value reads in SQL as the template shows it.
CHILD_TYPES = ("string", "text", "email", "url", "reference", "choice", "integer")


def _check_child_reads(check: _Checker, table: TableDef, text: str, template, at: tuple) -> None:
    """`child.FIELD` in a children notification's text is filled in per child in SQL: only shown as it
    is (no test or filter on it), and only fields whose value reads in SQL as in a template."""
    from ..templates import bare_uses

    if "child" not in template.names:
        return
    if not bare_uses(text, "child"):
        check.error(at, "child.FIELD is filled in for each child as it is: show it ({{ child.number }}), "
                        "without a filter, a test or arithmetic")
    for root, path, _ in template.paths:
        field = resolve_path(check.tables, table, path) if root == "child" else None
        if field is not None and field.type not in CHILD_TYPES:
            check.error(at, f"child.{path} is a {field.type} field; a child's fields in an e-mail are "
                            f"{', '.join(CHILD_TYPES)} fields")


def _address_table(tables: dict, table: TableDef, path: str) -> str | None:
    """The table of the people a recipients path reaches: a reference's table (`assigned_to`: sys_user),
    or the table that declares the e-mail field a path ends on."""
    field = resolve_path(tables, table, path)
    if field is None:
        return None
    return field.reference if field.type == "reference" else field.table


def _hidden_fields_mailed(check: _Checker, table: TableDef, spec: dict, where: tuple, outside: list,
                          access: list, warnings: list) -> None:
    """A known pitfall (a warning): an e-mail to people outside the platform (contacts, consumers: no
    access rule covers them, so they read as a user with no roles) that carries a field whose field
    rules limit who reads it (a case's work notes) reaches them with that field left empty."""
    from ..templates import TemplateProblem, compile_template

    lineage = (table.name, *check.ancestors(table))
    restricted = {r.field_name: r for r in access if r.table in lineage and r.field_name and "read" in r.operations}
    for key in ("subject", "body"):
        try:
            paths = compile_template(spec[key]).paths
        except TemplateProblem:
            continue  # reported by the template check
        for root, path, _ in paths:
            first = path.split(".")[0]
            rule = restricted.get(first)
            if root == "record" and rule is not None:
                warnings.append(check.doc.error(
                    where + (key,), f"e-mails record.{path} to {', '.join(outside)} (people outside the platform, "
                                    f"whom no access rule covers), but field rules limit who may read "
                                    f"{table.name}.{first} ({rule.location}): they get it empty; leave it out "
                                    "of the e-mail, or send it to users"))


def build_menu(docs: list[SourceDocument], tables: dict, roles: dict, errors: list,
               workspaces: dict | None = None, broken_views: frozenset = frozenset()) -> list[MenuApplication]:
    from ..query.conditions import parse_encoded

    applications = []
    for doc in docs:
        check = _Checker(doc, tables, roles, errors)
        for i, app in enumerate(doc.data["menu"]):
            modules = []
            for j, spec in enumerate(app["modules"]):
                where = ("menu", i, "modules", j)
                if spec.get("table"):
                    table = check.table(spec["table"], where + ("table",))
                    if table is not None and spec.get("query"):
                        try:
                            query = parse_encoded(spec["query"])
                        except QueryError as exc:
                            check.error(where + ("query",), str(exc))
                        else:
                            for path in fields_of(query.where) + [p for p, _ in query.order]:
                                check.field(table, path, where + ("query",))
                view = spec.get("view")
                declared = workspaces or {}
                if view is not None and view not in declared and view in broken_views:
                    pass  # its workspace has a mistake of its own, reported there
                elif view is not None and (view not in declared or declared[view].table != spec.get("table")):
                    check.error(where + ("view",), f"unknown view {view!r}: a view is the `list` of a workspace of "
                                                   f"table {spec.get('table')!r}")
                modules.append(MenuModule(spec["label"], spec.get("table"), spec.get("query", ""), spec.get("page"),
                                          check.roles_of(spec.get("roles", []), where + ("roles",)), view))
            applications.append(MenuApplication(app["application"], tuple(modules),
                                                check.roles_of(app.get("roles", []), ("menu", i, "roles")),
                                                app.get("order", 100)))
    return sorted(applications, key=lambda a: a.order)
