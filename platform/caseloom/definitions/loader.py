"""Load a definitions folder: parse, check against the JSON Schemas, cross-check, freeze.

Every problem is collected (not just the first) as a DefinitionError with its
`PATH:LINE:COL`, so `caseloom validate` can list them all in one run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from .alerting import build_alert_rules
from .basics import EMPTY_PROPERTY, build_access, build_properties, build_roles, parse_property_value
from .behaviour import (
    build_actions,
    build_lifecycles,
    build_menu,
    build_notifications,
    build_rules,
    check_unique_actions,
)
from .bench import build_bench
from .demodata import build_demo
from .documents import KINDS, Broken, read_document, schema_for
from .inbound import build_inbound
from .insight import build_dashboards, build_reports
from .lists import build_declared_lists, build_member_lists
from .model import DefinitionFile, Definitions, frozen_map
from .portals import build_portals
from .qualifiers import with_qualifiers
from .similarity import build_similar
from .tables import build_tables
from .timing import SLA_TABLES, build_schedules, build_sla_flows, build_slas, build_timers, timing_tables
from .workspaces import build_workspaces
from .yamlsource import DefinitionError, SourceDocument

SYSTEM_DIR = Path(__file__).resolve().parent.parent / "system"
SYSTEM_PREFIX = "<caseloom>/"


class DefinitionErrors(Exception):
    """All the problems found in a definitions folder."""

    def __init__(self, errors: list[DefinitionError]):
        self.errors = sorted(errors, key=lambda e: (e.location.path, e.location.line, e.location.column))
        super().__init__("\n".join(str(e) for e in self.errors))


def read_sources(folder: Path, prefix: str = "") -> list[tuple[str, str]]:
    """(display path, text) of every YAML file under `folder`, in a stable order."""
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".yaml", ".yml", ".csv") and p.is_file())
    return [(prefix + str(p.relative_to(folder)), p.read_text(encoding="utf-8")) for p in files]


def load_folder(folder: str | Path) -> Definitions:
    """Load the system tables shipped with the platform plus an application folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DefinitionErrors([DefinitionError(_nowhere(str(folder)), "definitions folder not found")])
    return load_sources(read_sources(folder), display_root=str(folder))


def load_sources(sources: Iterable[tuple[str, str]], display_root: str = "definitions") -> Definitions:
    """Load (relative path, YAML text) pairs; raises DefinitionErrors listing every problem."""
    errors: list[DefinitionError] = []
    sources = list(sources)
    texts = {f"{display_root}/{path}": text for path, text in sources}
    documents: dict[str, list[SourceDocument]] = {kind: [] for kind in KINDS}
    files: list[DefinitionFile] = []
    system = read_sources(SYSTEM_DIR, SYSTEM_PREFIX)
    broken = Broken()
    for rel_path, text in [*system, *sources]:
        if rel_path.endswith(".csv"):
            continue  # data a definition points at (a list's import), read through `texts`
        shown = rel_path if rel_path.startswith(SYSTEM_PREFIX) else f"{display_root}/{rel_path}"
        doc = read_document(shown, text, errors, broken)
        if doc is None:
            continue
        kind = next(iter(k for k in KINDS if k in doc.data and k != "table"), "table")
        documents[kind].append(doc)
        if not rel_path.startswith(SYSTEM_PREFIX):
            files.append(DefinitionFile(rel_path, kind, hashlib.sha256(text.encode()).hexdigest()[:16]))
    roles = build_roles(documents["roles"], errors)
    table_docs, sla_root = timing_tables(documents["table"], errors, documents["sla_flows"])
    tables = build_tables(table_docs, errors, with_qualifiers)
    broken.tables({doc.data["table"] for doc in table_docs}, tables)
    if broken.sla and sla_root is None:  # the SLA tables belong to a table that could not be read
        broken.names["table"].update(SLA_TABLES)
    properties = build_properties(documents["properties"], errors)
    access = build_access(documents["access"], tables, roles, errors)
    demo = build_demo(documents["demo"], tables, roles, errors)
    lifecycles, actions = build_lifecycles(documents["lifecycle"], tables, roles, errors, properties)
    actions += build_actions(documents["actions"], tables, roles, errors, properties)
    check_unique_actions(actions, errors, documents["actions"])
    tables = build_similar(table_docs, tables, roles, errors, properties, actions)
    rules = build_rules(documents["rules"], tables, roles, errors, properties)
    warnings: list[DefinitionError] = []
    notifications = build_notifications(documents["notifications"], tables, roles, errors, properties, access,
                                        warnings)
    _check_notify_effects(actions, rules, notifications, errors)
    member_lists = build_member_lists(documents["member_list"], tables, roles, errors)
    broken.member_types.update((doc.data["member_list"], name) for doc in documents["member_list"]
                               for name in doc.data["types"]
                               if name not in getattr(member_lists.get(doc.data["member_list"]), "types", {}))
    workspaces = build_workspaces(documents["workspace"], tables, roles, errors, properties, member_lists)
    broken_views = frozenset(d.data["workspace"] for d in documents["workspace"]) - set(workspaces)
    menu = build_menu(documents["menu"], tables, roles, errors, workspaces, broken_views)
    declared_lists = build_declared_lists([*documents["recipients_list"], *documents["declared_list"]], member_lists,
                                          errors, lambda yaml_path, name: texts.get(_sibling(yaml_path, name)),
                                          tables=tables, root=display_root)
    bench = build_bench(documents["bench"], tables, actions, properties, errors, roles)
    schedules, broken_schedules = build_schedules(documents["schedules"], errors)
    named_schedules = {**schedules, **dict.fromkeys(broken_schedules)}  # broken: None, already reported
    flows, broken_flows = build_sla_flows(documents["sla_flows"], tables, roles, errors, properties, sla_root)
    slas = build_slas(documents["slas"], tables, roles, errors, properties, named_schedules, sla_root, warnings,
                      {**flows, **dict.fromkeys(broken_flows)})
    timers = build_timers(documents["timers"], tables, roles, errors, properties, named_schedules)
    _check_notify_effects((), [*(e for sla in slas.values() for e in sla.escalations),
                               *(e for flow in flows.values() for e in flow.escalations), *timers.values()],
                          notifications, errors)
    inbound = build_inbound(documents["inbound_email"], tables, roles, errors, properties)
    portals = build_portals(documents["portal"], tables, roles, errors, actions, properties)
    reports = build_reports(documents["reports"], tables, roles, errors, properties)
    declared_reports = {name for doc in documents["reports"] for name in doc.data["reports"]}
    dashboards = build_dashboards(documents["dashboard"], tables, roles, errors, reports,
                                  declared_reports - set(reports))
    if bench is not None and bench.dashboard is not None and bench.dashboard not in dashboards:
        doc = documents["bench"][0]
        errors.append(doc.error(("bench", "views", "dashboard"), f"unknown dashboard {bench.dashboard!r} "
                                f"(known: {', '.join(sorted(dashboards)) or 'none are declared'})"))
    alert_rules = build_alert_rules(documents["alert_rules"], tables, roles, errors, properties, actions, member_lists,
                                    warnings)
    if errors:
        raise DefinitionErrors(broken.without_follow_ons(errors))
    return Definitions(
        tables=frozen_map(tables),
        properties=frozen_map(properties),
        roles=frozen_map(roles),
        access=tuple(access),
        demo=demo,
        files=tuple(files),
        lifecycles=frozen_map(lifecycles),
        actions=tuple(actions),
        rules=tuple(rules),
        notifications=frozen_map(notifications),
        menu=tuple(menu),
        member_lists=frozen_map(member_lists),
        declared_lists=tuple(declared_lists),
        bench=bench,
        workspaces=frozen_map(workspaces),
        sla_root=sla_root,
        schedules=frozen_map(schedules),
        slas=frozen_map(slas),
        sla_flows=frozen_map(flows),
        timers=frozen_map(timers),
        inbound_email=inbound,
        portals=frozen_map(portals),
        reports=frozen_map(reports),
        dashboards=frozen_map(dashboards),
        alert_rules=alert_rules,
        root=display_root,
        warnings=tuple(sorted(warnings, key=lambda w: (w.location.path, w.location.line, w.location.column))),
    )


def _sibling(yaml_path: str, name: str) -> str:
    from posixpath import dirname, join, normpath

    return normpath(join(dirname(yaml_path), name))


def _check_notify_effects(actions, rules, notifications, errors) -> None:
    from ..effects.builtin import BranchArgs, NotifyArgs

    def check(effects) -> None:
        for effect in effects:
            if isinstance(effect.args, NotifyArgs) and effect.args.name not in notifications:
                known = ", ".join(sorted(notifications)) or "none are declared"
                errors.append(DefinitionError(effect.args.location or effect.location,
                                              f"notify: unknown notification {effect.args.name!r} (known: {known})"))
            elif isinstance(effect.args, BranchArgs):
                check(effect.args.then)
                check(effect.args.otherwise)

    for owner in (*actions, *rules):
        check(owner.effects)


def _nowhere(path: str):
    from .yamlsource import Location

    return Location(path, 1, 1)


__all__ = ["EMPTY_PROPERTY", "KINDS", "DefinitionErrors", "load_folder", "load_sources", "parse_property_value",
           "read_sources", "schema_for"]
