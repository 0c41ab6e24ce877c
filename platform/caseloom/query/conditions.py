"""Conditions as data: one tree for encoded queries, YAML conditions and list filters.

Encoded queries follow ServiceNow: terms joined by `^` (AND) and `^OR` (OR, binding
tighter than AND, so `a^b^ORc` is `a AND (b OR c)`), `^NQ` starting a new query that
is ORed with the previous ones, and `ORDERBY`/`ORDERBYDESC` terms.
"""

from __future__ import annotations

import re
from typing import Any

from .dateparts import DatePart, make_part, parse_part
from .dynamic import recognise
from .nodes import FIELD, All, AnyOf, Node, Not, PropertyTerm, Query, QueryError, Term
from .operators import BY_TOKEN, TOKENS_LONGEST_FIRST, operator

__all__ = ["All", "AnyOf", "Node", "Not", "PropertyTerm", "Query", "QueryError", "Term", "fields_of", "from_data",
           "parse_encoded", "parse_term", "to_encoded"]


# What one encoded query may hold: databases refuse deeper expressions (SQLite: 1,000) and more bound
# values (PostgreSQL: 65,535) than this, with an error instead of an answer.
MAX_TERMS, MAX_VALUES = 500, 10_000


def parse_encoded(text: str | None) -> Query:
    """Parse a ServiceNow encoded query into a Query; raises QueryError naming the bad term."""
    if not text or not text.strip():
        return Query()
    queries: list[Node] = []
    order: list[tuple[str, bool]] = []
    terms = text.count("^") + 1
    if terms > MAX_TERMS:
        raise QueryError(f"the query has {terms} terms; at most {MAX_TERMS} (use IN for a list of values)")
    for part in text.split("^NQ"):
        groups: list[list[Node]] = []
        for raw in part.split("^"):
            if raw == "" or raw == "EQ":
                continue
            if raw.startswith("ORDERBYDESC"):
                order.append((_order_field(raw[11:]), True))
            elif raw.startswith("ORDERBY"):
                order.append((_order_field(raw[7:]), False))
            elif raw.startswith("OR") and groups:  # fields are lowercase, so "OR" is never a field
                node = parse_range(raw[2:]) or parse_relative(raw[2:]) or parse_term(raw[2:])
                groups[-1].extend(node.items if isinstance(node, AnyOf) else [node])  # NOTON's ORs join the group
            else:
                node = parse_range(raw) or parse_relative(raw) or parse_term(raw)
                if isinstance(node, All):  # a range's two ends are two terms of the AND, as two filter rows
                    groups.extend([item] for item in node.items)
                else:
                    groups.append(list(node.items) if isinstance(node, AnyOf) else [node])
        nodes = [g[0] if len(g) == 1 else AnyOf(tuple(g)) for g in groups]
        if nodes:
            queries.append(nodes[0] if len(nodes) == 1 else All(tuple(nodes)))
    where = None if not queries else queries[0] if len(queries) == 1 else AnyOf(tuple(queries))
    return Query(where, tuple(order))


def _order_field(name: str) -> str:
    if not FIELD.fullmatch(name):
        raise QueryError(f"cannot order by {name!r}: not a field name")
    return name


TEXT_QUERY = "123TEXTQUERY321"  # ServiceNow's keyword search: every word in a table's text index

# ServiceNow's ranges, written as the comparisons they make: `fieldBETWEENstart@end` is `field>=start^field<=end`,
# `fieldONlabel@start@end` the same (the label, "Today", says which period the list filter chose), and
# `fieldNOTONlabel@start@end` its negation (before, after, or empty). Each end may be a dynamic value.
RANGES = {"BETWEEN": 2, "NOTON": 3, "ON": 3}  # token -> parts between its @ signs (NOTON before ON: longest first)


def parse_range(raw: str) -> Node | None:
    """A BETWEEN, ON or NOTON term as the comparisons it makes (see RANGES), or None for any other term."""
    match = FIELD.match(raw)
    if not match:
        return None
    field, rest = match.group(0), raw[match.end():]
    token = next((t for t in RANGES if rest.startswith(t)), None)  # no operator token starts like these
    if token is None:
        return None
    parts = rest[len(token):].split("@")
    if len(parts) != RANGES[token] or not all(p.strip() for p in parts[-2:]):
        shape = "start@end" if token == "BETWEEN" else "label@start@end"
        raise QueryError(f"query term {raw!r}: {token} takes {shape} (e.g. {field}{token}"
                         f"{'' if token == 'BETWEEN' else 'Today@'}javascript:gs.beginningOfToday()@"
                         f"javascript:gs.endOfToday())")
    start, end = (_recognised(p, f"query term {raw!r}") for p in parts[-2:])
    if token == "NOTON":
        return AnyOf((Term(field, "lt", start), Term(field, "gt", end), Term(field, "empty", None)))
    return All((Term(field, "ge", start), Term(field, "le", end)))


# ServiceNow's relative dates: `fieldRELATIVEGT@hour@ago@3` is `field>javascript:gs.hoursAgo(3)` (after 3 hours
# ago), `@ahead@` the same ahead of now; the unit's dynamic value is read when the query runs
RELATIVE = {"GT": "gt", "GE": "ge", "LT": "lt", "LE": "le"}
RELATIVE_UNITS = {"minute": ("minutesAgo", 1), "hour": ("hoursAgo", 1), "day": ("daysAgo", 1), "week": ("daysAgo", 7),
                  "month": ("monthsAgo", 1), "quarter": ("monthsAgo", 3), "year": ("yearsAgo", 1)}


def parse_relative(raw: str) -> Term | None:
    """A RELATIVEGT/GE/LT/LE term as the comparison with a dynamic value it makes, or None for another term."""
    match = FIELD.match(raw)
    rest = raw[match.end():] if match else ""
    if not rest.startswith("RELATIVE"):
        return None
    field, parts = match.group(0), rest[len("RELATIVE"):].split("@")
    unit = RELATIVE_UNITS.get(parts[1]) if len(parts) == 4 else None
    if (len(parts) != 4 or parts[0] not in RELATIVE or unit is None or parts[2] not in ("ago", "ahead")
            or not re.fullmatch(r"\d{1,6}", parts[3])):
        raise QueryError(f"query term {raw!r}: RELATIVE takes GT, GE, LT or LE @unit@ago or ahead@N, the unit one of "
                         f"{', '.join(RELATIVE_UNITS)} (e.g. {field}RELATIVEGT@hour@ago@3: after 3 hours ago)")
    name, times = unit
    amount = int(parts[3]) * times * (1 if parts[2] == "ago" else -1)
    return Term(field, RELATIVE[parts[0]], _recognised(f"javascript:gs.{name}({amount})", f"query term {raw!r}"))


def parse_term(raw: str) -> Term:
    """One `field OP value` term, e.g. `priority<=2` or `account.nameLIKEacme`; ServiceNow's keyword
    search `123TEXTQUERY321=words` is a term of the pseudo-field TEXT_QUERY (caseloom.textindex)."""
    if raw.startswith(TEXT_QUERY + "="):
        return Term(TEXT_QUERY, "eq", raw[len(TEXT_QUERY) + 1:])
    match = FIELD.match(raw)
    if not match:
        raise QueryError(f"query term {raw!r} does not start with a field name")
    field, rest = match.group(0), raw[match.end():]
    if rest.startswith("DATEPART"):
        return Term(field, "datepart", parse_part(field, rest[len("DATEPART"):]))
    if rest.startswith("DYNAMIC"):
        return Term(field, "eq", _recognised(_dynamic_filter(raw, field, rest[len("DYNAMIC"):]), f"query term {raw!r}"))
    for token in TOKENS_LONGEST_FIRST:
        if rest.startswith(token):
            op = BY_TOKEN[token]
            value: Any = rest[len(token):]
            if not op.takes_value:
                if value:
                    raise QueryError(f"query term {raw!r}: {token} takes no value")
                value = None
            elif op.list_value:
                value = [v for v in value.split(",") if v != ""]
                if len(value) > MAX_VALUES:
                    raise QueryError(f"query term {field}{token}...: {len(value)} values; at most {MAX_VALUES}")
            term = Term(field, op.name, _recognised(value, f"query term {raw!r}"))
            if op.field:
                other_path(term)
            return term
    raise QueryError(f"query term {raw!r} has no known operator after {field!r} "
                     f"(known: {', '.join(sorted(BY_TOKEN))})")


def other_path(term: Term) -> str:
    """The other field's path of a field comparison, checked to be a path (a QueryError naming the term)."""
    value = term.value
    if not isinstance(value, str) or not FIELD.fullmatch(value):
        op = operator(term.op)
        shown = "" if value is None else str(value)  # a dynamic value as it was written
        raise QueryError(f"{term.field}: {op.token} compares with another field; its value is that field's name "
                         f"(e.g. {term.field}{op.token}other_field), not {shown!r}")
    return value


# ServiceNow's dynamic filter options (`ownerDYNAMIC90d1921e5f510100a9ad2572f2b477fe`, "is (dynamic) Me"): the
# sys_ids of its own, the same on every instance, and the dynamic value each stands for
DYNAMIC_FILTERS = {"90d1921e5f510100a9ad2572f2b477fe": ("Me", "javascript:gs.getUserID()"),
                   "d6435e965f510100a9ad2572f2b47744": ("One of My Groups", "javascript:gs.getUser().getMyGroups()")}


def _dynamic_filter(raw: str, field: str, sys_id: str) -> str:
    known = DYNAMIC_FILTERS.get(sys_id.strip().lower())
    if known is None:
        names = ", ".join(f"{name} ({key})" for key, (name, _) in DYNAMIC_FILTERS.items())
        raise QueryError(f"query term {raw!r}: DYNAMIC takes one of ServiceNow's dynamic filters: {names}; for "
                         f"another, write its value (e.g. {field}=javascript:gs.getUserID())")
    return known[1]


def to_encoded(query: Query) -> str:
    """The encoded-query text of a Query (the inverse of parse_encoded for its shapes)."""
    parts = []
    if query.where is not None:
        parts.append(_encode_node(query.where, top=True))
    parts.extend(("ORDERBYDESC" if desc else "ORDERBY") + field for field, desc in query.order)
    return "^".join(p for p in parts if p)


def _encode_term(term: Term) -> str:
    op = operator(term.op)
    if not op.takes_value:
        return f"{term.field}{op.token}"
    value = ",".join(map(_encode_value, term.value)) if op.list_value else _encode_value(term.value)
    return f"{term.field}{op.token}{value}"


def _encode_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _encode_node(node: Node, top: bool = False) -> str:
    if isinstance(node, Term):
        return _encode_term(node)
    if isinstance(node, All):
        return "^".join(_encode_group(item) for item in node.items)
    if isinstance(node, AnyOf) and top and all(not isinstance(i, Term) for i in node.items):
        return "^NQ".join(_encode_node(item) for item in node.items)
    if isinstance(node, AnyOf) and all(_one_term(i) for i in node.items):
        return "^OR".join(_encode_item(i) for i in node.items)
    raise QueryError("this condition cannot be written as an encoded query")


def _encode_group(node: Node) -> str:
    if isinstance(node, Term):
        return _encode_term(node)
    if isinstance(node, AnyOf) and all(_one_term(i) for i in node.items):
        return "^OR".join(_encode_item(i) for i in node.items)
    raise QueryError("this condition cannot be written as an encoded query")


def _range_of(node: Node) -> tuple[str, Any, Any] | None:
    """(field, start, end) of the two comparisons a BETWEEN makes, or None."""
    if isinstance(node, All) and len(node.items) == 2 and all(isinstance(i, Term) for i in node.items):
        low, high = node.items
        if (low.op, high.op) == ("ge", "le") and low.field == high.field:
            return low.field, low.value, high.value
    return None


def _one_term(node: Node) -> bool:
    """Whether a node is written as one encoded term: a term, or a range (BETWEEN) in an OR group."""
    return isinstance(node, Term) or _range_of(node) is not None


def _encode_item(node: Node) -> str:
    found = _range_of(node)
    if found is None:
        return _encode_term(node)
    field, start, end = found
    return f"{field}BETWEEN{_encode_value(start)}@{_encode_value(end)}"


def from_data(data: Any, where: str = "condition") -> Node:
    """A YAML/JSON condition (`{all: [...]}`, `{any: [...]}`, `{not: ...}`, `{field, op, value}`)
    or an encoded-query string, as a Node."""
    if isinstance(data, str):
        query = parse_encoded(data)
        if query.where is None:
            raise QueryError(f"{where}: empty condition")
        return query.where
    if not isinstance(data, dict):
        raise QueryError(f"{where}: expected a mapping or an encoded query, got {data!r}")
    if "all" in data:
        return All(tuple(from_data(d, f"{where}.all[{i}]") for i, d in enumerate(data["all"])))
    if "any" in data:
        return AnyOf(tuple(from_data(d, f"{where}.any[{i}]") for i, d in enumerate(data["any"])))
    if "not" in data:
        return Not(from_data(data["not"], f"{where}.not"))
    if "property" in data:
        op = operator(str(data.get("op", "eq")))
        if op is None or op.change is not None:
            raise QueryError(f"{where}: unknown operator {data.get('op')!r}")
        return PropertyTerm(str(data["property"]), op.name, _recognised(data.get("value"), f"{where}.value"))
    if "field" not in data or "op" not in data:
        raise QueryError(f"{where}: a condition needs field and op, property, or all/any/not")
    if str(data["op"]).lower() == "between":  # {field, op: between, value: [start, end]}: BETWEEN's two comparisons
        ends = data.get("value")
        if not isinstance(ends, list) or len(ends) != 2 or any(e in (None, "") for e in ends):
            raise QueryError(f"{where}: between takes value: [start, end]")
        start, end = (_recognised(e, f"{where}.value") for e in ends)
        return All((Term(str(data["field"]), "ge", start), Term(str(data["field"]), "le", end)))
    op = operator(str(data["op"]))
    if op is None:
        raise QueryError(f"{where}: unknown operator {data['op']!r}")
    if op.parts:  # {field, op: datepart, value: {part: dayofweek, value: monday, compare: EE}}
        return Term(str(data["field"]), op.name, _date_part(str(data["field"]), data.get("value"), where))
    value = data.get("value")
    if op.list_value and not isinstance(value, list):
        value = [value]
    term = Term(str(data["field"]), op.name, _recognised(value, f"{where}.value"))
    if op.field:
        try:
            other_path(term)
        except QueryError as exc:
            raise QueryError(f"{where}.value: {exc}") from None
    return term


def _date_part(field: str, value: Any, where: str) -> DatePart:
    try:
        if isinstance(value, dict):
            return make_part(field, value.get("part"), value.get("value"), value.get("compare", "EE"),
                                  value.get("label"))
        if isinstance(value, str):
            return parse_part(field, value)
    except QueryError as exc:
        raise QueryError(f"{where}.value: {exc}") from None
    raise QueryError(f"{where}.value: datepart takes {{part: dayofweek, value: monday, compare: EE}}")


def _recognised(value: Any, where: str) -> Any:
    """The value with `javascript:` dynamic values recognised (and refused, naming `where`, when unknown)."""
    try:
        return recognise(value)
    except QueryError as exc:
        raise QueryError(f"{where}: {exc}") from None


def terms_of(node: Node | None) -> list[Term | PropertyTerm]:
    """Every term of a condition, in order."""
    if node is None:
        return []
    if isinstance(node, (Term, PropertyTerm)):
        return [node]
    if isinstance(node, Not):
        return terms_of(node.item)
    return [t for item in node.items for t in terms_of(item)]


def fields_of(node: Node | None) -> list[str]:
    """Every field path a condition reads (both of a field comparison's: `endedGT_FIELDstarted`)."""
    paths = []
    for term in terms_of(node):
        if isinstance(term, Term):
            paths.append(term.field)
            op = operator(term.op)
            if op is not None and op.field and isinstance(term.value, str):
                paths.append(term.value)
    return paths
