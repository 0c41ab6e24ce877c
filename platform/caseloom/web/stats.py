"""ServiceNow's Aggregate API (contract section 11): `GET /api/now/stats/{table}`'s parameters read
into an AggregateQuery, and its answers written in ServiceNow's shape, numbers as strings:

    {"result": {"stats": {"count": "12", "avg": {"priority": "2.5"}}}}                     (ungrouped)
    {"result": [{"stats": {"count": "3"},
                 "groupby_fields": [{"field": "state", "value": "10", "display_value": "Open"}]}]}

Every bad parameter is a 400 naming it (a 403 for a field the user may not read).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..definitions.model import FieldDef, TableDef
from ..definitions.tables import resolve_path
from ..query import QueryError, parse_encoded
from ..query.aggregate import COMPARISONS, FUNCTIONS, AggregateQuery, Answer, Group, Having, Measure, Order, number_text
from .errors import ApiError
from .serialize import DISPLAY_MODES

FIELD_FUNCTIONS = ("avg", "min", "max", "sum")  # sysparm_<function>_fields
PARAMETER_LENGTH = 4_000
LIST_ITEMS = 50
TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no", "")


def parse_request(args: Mapping[str, str]) -> tuple[AggregateQuery, str]:
    """The aggregate a request asks for, and its display mode (`sysparm_display_value`)."""
    count = _flag(args, "sysparm_count")
    measures = [Measure("count", None, "sysparm_count")] if count else []
    for function in FIELD_FUNCTIONS:
        name = f"sysparm_{function}_fields"
        measures += [Measure(function, path, name) for path in _items(args, name)]
    group_by = tuple(dict.fromkeys(_items(args, "sysparm_group_by")))
    having = tuple(_having(item) for item in _items(args, "sysparm_having"))
    order = tuple(_order(item) for item in _items(args, "sysparm_orderby"))
    display = (args.get("sysparm_display_value") or "false").lower()
    if display not in DISPLAY_MODES:
        raise ApiError(400, f"sysparm_display_value must be one of {', '.join(DISPLAY_MODES)}", f"got {display[:40]!r}")
    text = args.get("sysparm_query") or ""
    try:
        where = parse_encoded(text).where
    except QueryError as exc:
        raise ApiError(400, f"sysparm_query: {exc}", str(exc)) from None
    return AggregateQuery(where, group_by, tuple(measures), having, order, "sysparm_group_by", "sysparm_query"), display


def _text(args: Mapping[str, str], name: str) -> str:
    raw = args.get(name) or ""
    if len(raw) > PARAMETER_LENGTH:
        raise ApiError(400, f"{name} is longer than {PARAMETER_LENGTH:,} characters", f"got {len(raw):,}")
    return raw


def _items(args: Mapping[str, str], name: str) -> list[str]:
    items = [item.strip() for item in _text(args, name).split(",") if item.strip()]
    if len(items) > LIST_ITEMS:
        raise ApiError(400, f"{name} lists more than {LIST_ITEMS} items", f"got {len(items)}")
    return items


def _flag(args: Mapping[str, str], name: str) -> bool:
    raw = _text(args, name).strip().lower()
    if raw in TRUE:
        return True
    if raw in FALSE:
        return False
    raise ApiError(400, f"{name} must be true or false", f"got {raw[:40]!r}")


def _having(item: str) -> Having:
    """`aggregate^field^operator^value`, as `count^priority^>^3` (a count's field may be empty)."""
    parts = item.split("^")
    usage = "each item is aggregate^field^operator^value, as count^priority^>^3"
    if len(parts) != 4:
        raise ApiError(400, f"sysparm_having: {item[:80]!r} is not aggregate^field^operator^value", usage)
    function, path, comparison, value = (p.strip() for p in parts)
    function = function.lower()
    if function not in FUNCTIONS:
        raise ApiError(400, f"sysparm_having: unknown aggregate {function[:20]!r} in {item[:80]!r}",
                       f"one of {', '.join(FUNCTIONS)}")
    if comparison not in COMPARISONS:
        raise ApiError(400, f"sysparm_having: unknown operator {comparison[:10]!r} in {item[:80]!r}",
                       f"one of {' '.join(COMPARISONS)}")
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if number != number or number in (float("inf"), float("-inf")):
        raise ApiError(400, f"sysparm_having: {value[:40]!r} in {item[:80]!r} is not a number", usage)
    if not path and function != "count":
        raise ApiError(400, f"sysparm_having: {function} needs a field in {item[:80]!r}", usage)
    return Having(Measure(function, path if path and path != "*" else None, "sysparm_having"), comparison, number)


def _order(item: str) -> Order:
    """A grouped field or an aggregate, then `^DESC` for the other way: `state`, `AVG^priority^DESC`, `COUNT^DESC`."""
    parts = [p.strip() for p in item.split("^")]
    descending = False
    if parts and parts[-1].upper() in ("DESC", "ASC"):
        descending = parts.pop().upper() == "DESC"
    usage = "each item is a grouped field or AGGREGATE^field, then ^DESC to reverse: state, AVG^priority^DESC, COUNT"
    if not parts or not parts[0]:
        raise ApiError(400, f"sysparm_orderby: {item[:80]!r} names nothing to order by", usage)
    if parts[0].lower() in FUNCTIONS:
        function, rest = parts[0].lower(), parts[1:]
        if len(rest) > 1 or (function != "count" and not rest) or (function == "count" and rest not in ([], ["*"])):
            raise ApiError(400, f"sysparm_orderby: {item[:80]!r} is not AGGREGATE^field (COUNT takes none)", usage)
        path = rest[0] if rest and function != "count" else None
        return Order(descending, "sysparm_orderby", measure=Measure(function, path, "sysparm_orderby"))
    if len(parts) > 1:
        raise ApiError(400, f"sysparm_orderby: {item[:80]!r} is not a field or AGGREGATE^field", usage)
    return Order(descending, "sysparm_orderby", path=parts[0])


def render(tables: Mapping[str, TableDef], tdef: TableDef, query: AggregateQuery, groups: list[Group],
           answers: list[Answer], display: str) -> dict | list[dict]:
    """The `result`: one object when nothing is grouped, else one per group."""
    fields = {m.path: resolve_path(tables, tdef, m.path) for m in query.measures if m.path}
    if not groups:
        return {"stats": _stats(query, fields, answers[0] if answers else None)}
    return [{"stats": _stats(query, fields, answer),
             "groupby_fields": [_group_value(group, value, shown, display)
                                for group, (value, shown) in zip(groups, answer.values, strict=True)]}
            for answer in answers]


def _stats(query: AggregateQuery, fields: dict[str, FieldDef | None], answer: Answer | None) -> dict:
    stats: dict[str, Any] = {}
    for measure in query.measures:
        value = answer.measures.get(measure.key) if answer is not None else None
        if measure.function == "count":
            stats["count"] = str(value or 0)
            continue
        field = fields.get(measure.path)
        if measure.function in ("min", "max") and field is not None and value is not None:
            text = field.ftype.render(value)
        else:
            text = number_text(value)
        stats.setdefault(measure.function, {})[measure.path] = text
    return stats


def _group_value(group: Group, value: Any, shown: Any, display: str) -> dict:
    field = group.field
    text = "" if value is None else field.ftype.render(value)
    if field.choices and text:
        words = field.choice_label(text) or text
    elif group.display and text:
        words = "" if shown is None else str(shown)
    else:
        words = text
    return {"field": group.path, "value": words if display == "true" else text, "display_value": words}


__all__ = ["parse_request", "render"]
