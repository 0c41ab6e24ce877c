"""Alert rules (kind `alert_rules`): from documents to AlertRuleDefs, every table, field, condition,
property, action and template checked where it is written."""

from __future__ import annotations

from .behaviour import _Checker
from .inbound import field_values
from .model import AlertMake, AlertRuleDef, TableDef, frozen_map
from .yamlsource import SourceDocument

ALERT_TABLE = "em_alert"
# what the values of a record an alert rule makes may name
TEMPLATE_NAMES = ("alert", "affected", "count", "priority", "now")
SINGLE_UNLINKED = ("`single` has no `alert_field`: below the threshold, an alert with several affected makes a "
                   "record for each, but only the first is linked to it and hears of its clearing")


def _clears_the_first_only(rule: AlertRuleDef) -> bool:
    """A rule that may make several `single` records for one alert (its threshold above 2, or a property's)
    without a reference back to the alert on them."""
    return (rule.single is not None and rule.single.alert_field is None
            and (rule.threshold_property is not None or rule.threshold > 2))


def build_alert_rules(docs: list[SourceDocument], tables: dict, roles: dict, errors: list, properties: dict,
                      actions: list, member_lists: dict, warnings: list | None = None) -> tuple[AlertRuleDef, ...]:
    rules: list[AlertRuleDef] = []
    seen: dict[str, str] = {}
    alert = tables.get(ALERT_TABLE)
    for doc in docs:
        check = _Checker(doc, tables, roles, errors, properties)
        for i, spec in enumerate(doc.data["alert_rules"]):
            where = ("alert_rules", i)
            if spec["name"] in seen:
                check.error(where + ("name",), f"alert rule {spec['name']!r} is already declared at {seen[spec['name']]}")
                continue
            seen[spec["name"]] = str(doc.where(*where, "name"))
            rule = _rule(check, doc, where, spec, tables, alert, actions, member_lists)
            if rule is not None:
                rules.append(rule)
                if warnings is not None and _clears_the_first_only(rule):
                    warnings.append(doc.error(where + ("single",), SINGLE_UNLINKED))
    return tuple(rules)


def _rule(check: _Checker, doc: SourceDocument, where: tuple, spec: dict, tables: dict, alert: TableDef | None,
          actions: list, member_lists: dict) -> AlertRuleDef | None:
    before = len(check.errors)
    condition = check.encoded(alert, spec.get("condition"), where + ("condition",))
    affected = spec["affected"]
    source = check.table(affected["table"], where + ("affected", "table"))
    affected_condition = None
    if source is not None:
        for key in ("node", "who"):
            field = source.field(affected[key])
            if field is None or not field.stored:
                check.error(where + ("affected", key), f"{affected[key]!r} is not a field of {source.name!r}")
        who = source.field(affected["who"])
        if who is not None and who.type != "reference":
            check.error(where + ("affected", "who"), f"{affected['who']!r} is a {who.type} field: `who` is a reference "
                                                     "to the affected (an account)")
        affected_condition = check.encoded(source, affected.get("condition"), where + ("affected", "condition"))
    made_tables = set()
    major = _make(check, where + ("major",), spec["major"], actions, member_lists, made_tables, alert)
    single = _make(check, where + ("single",), spec["single"], actions, member_lists, made_tables, alert) \
        if "single" in spec else None
    link = spec["link"]
    field = alert.field(link) if alert is not None else None
    if field is None or field.type != "reference":
        check.error(where + ("link",), f"{link!r} is not a reference field of {ALERT_TABLE!r} (an application adds "
                                       "one: tables/em_alert.yaml)")
    else:
        for name in made_tables:
            if field.reference not in (name, *check.ancestors(tables[name])):
                check.error(where + ("link",), f"em_alert.{link} refers to {field.reference!r}: it cannot hold "
                                               f"a {name} record")
    threshold_property = spec.get("threshold_property")
    if threshold_property is not None:
        declared = check.properties.get(threshold_property) if check.properties else None
        if declared is None:
            check.error(where + ("threshold_property",), f"unknown system property {threshold_property!r}")
        elif declared.type != "integer":
            check.error(where + ("threshold_property",), f"{threshold_property!r} is a {declared.type} property, "
                                                         "not an integer")
    cleared = spec.get("cleared") or {}
    journal = None
    if "journal" in cleared:
        journal = (cleared["journal"]["field"], cleared["journal"]["text"])
        for name in made_tables:
            target = tables[name].field(journal[0])
            if target is None or not target.ftype.journal:
                check.error(where + ("cleared", "journal", "field"), f"{journal[0]!r} is not a journal field of "
                                                                     f"{name!r}")
    for name in made_tables:
        if cleared.get("action"):
            check_action(check, where + ("cleared", "action"), tables, name, cleared["action"], actions)
    if len(check.errors) > before or source is None:
        return None
    return AlertRuleDef(
        spec["name"], link, source.name, affected["node"], affected["who"], major, condition, affected_condition,
        spec.get("threshold", 2), threshold_property, frozen_map({k: v for k, v in (spec.get("priority") or {}).items()}),
        single, journal, cleared.get("action"), frozen_map(cleared.get("inputs") or {}), doc.where(*where))


def _make(check: _Checker, where: tuple, spec: dict, actions: list, member_lists: dict,
          made_tables: set, alert: TableDef | None) -> AlertMake | None:
    table = check.table(spec["table"], where + ("table",))
    if table is None:
        return None
    made_tables.add(table.name)
    values = field_values(check, table, spec["values"], where + ("values",), TEMPLATE_NAMES)
    alert_field = spec.get("alert_field")
    if alert_field is not None:
        field = table.field(alert_field)
        if field is None or field.type != "reference" or alert is None \
                or field.reference not in (ALERT_TABLE, *check.ancestors(alert)):
            check.error(where + ("alert_field",), f"{alert_field!r} is not a reference field of {table.name!r} to "
                                                  f"{ALERT_TABLE!r}")
        elif alert_field in spec["values"]:
            check.error(where + ("values", alert_field), f"{alert_field!r} is the `alert_field`: the alert sets it")
    list_field, list_values = None, {}
    if "list" in spec:
        list_field = spec["list"]["field"]
        field = table.field(list_field)
        mdef = next((m for m in member_lists.values() if m.table == field.reference), None) \
            if field is not None and field.type == "reference" else None
        if mdef is None:
            check.error(where + ("list", "field"), f"{list_field!r} is not a reference of {table.name!r} to a member "
                                                   "list table (kind member_list)")
        else:
            list_values = field_values(check, check.tables[mdef.table], spec["list"]["values"],
                                       where + ("list", "values"), TEMPLATE_NAMES)
    if spec.get("action"):
        check_action(check, where + ("action",), check.tables, table.name, spec["action"], actions)
    return AlertMake(table.name, frozen_map(values), list_field, frozen_map(list_values), spec.get("action"),
                     frozen_map(spec.get("inputs") or {}), alert_field)


def check_action(check: _Checker, where: tuple, tables: dict, table: str, name: str, actions: list) -> None:
    lineage = {table, *check.ancestors(tables[table])}
    if not any(a.name == name and a.table in lineage for a in actions):
        check.error(where, f"table {table!r} has no action {name!r}")


__all__ = ["build_alert_rules"]
