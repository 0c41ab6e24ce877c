"""Two interpreters, one meaning: every operator over every field type, in SQL and in Python.

A condition is compiled to SQL for lists, the API and recipients, and evaluated in Python for
rules, notifications and action conditions. For every operator of the operator table and every
field type of the registry (both read at collection time, so a new one is covered or fails
here), over records holding tricky values, the records the SQL query returns must be exactly
those `evaluate()` accepts, and a value one refuses the other refuses with the same message.
Runs on SQLite and, with CASELOOM_TEST_POSTGRES_URL, on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import pytest

from caseloom.automation.conditions import resolver
from caseloom.bootstrap import initialise
from caseloom.config import Config
from caseloom.database import LONG_LIST
from caseloom.definitions import load_folder
from caseloom.fieldtypes import FIELD_TYPES
from caseloom.query import OPERATORS, Query, QueryError, from_data, parse_encoded
from caseloom.query.evaluate import evaluate
from caseloom.query.meaning import bind_fields
from caseloom.runtime import Runtime
from conftest import BACKENDS, _pg_url, pg_pool

ITEM, TARGET = "pq_item", "pq_target"
QUERY_OPERATORS = sorted(name for name, op in OPERATORS.items() if op.change is None)
QUERYABLE = sorted(name for name, t in FIELD_TYPES.items() if t.queryable)
UNQUERYABLE = sorted(name for name, t in FIELD_TYPES.items() if not t.queryable)


def sys_id(n: int) -> str:
    return f"{n:032x}"


ACME, LOWER_ACME, SPACED_ACME, NAMELESS, ZERO = (sys_id(n) for n in range(1, 6))
TARGETS = {ACME: "Acme", LOWER_ACME: "acme", SPACED_ACME: " Acme", NAMELESS: None, ZERO: "0"}
NOBODY = sys_id(999)  # a sys_id no record has

# A field of each type: (type, extra YAML). Types that need more than a type say so here.
FIELDS = {
    **{f"f_{name}": (name, "") for name in FIELD_TYPES},
    "f_choice": ("choice", ", choices: {low: Low, high: High, '10': Ten}"),
    "f_choice_int": ("choice", ", choices: {1: New, 2: Open, 10: Closed}"),
    "f_reference": ("reference", f", to: {TARGET}"),
}

STRINGS = {
    "records": ["abc", "ABC", " abc", "abc ", "0", "10", "9", "a%b", "a_b", "École", "x,y"],
    "encoded": ["", "   ", "abc", "ABC", " abc", "abc ", "b", "0", "00", "10", "9", "a%", "%", "_", "Éc", "z"],
    "native": [0, 10, True, None, "abc"],
}
# Per field: the values of its records (as a client sends them), the values a condition compares
# them with as encoded-query text and as YAML/JSON natives. Every queryable type needs an entry.
VALUES = {
    "f_string": STRINGS,
    "f_text": STRINGS,
    "f_integer": {"records": [0, 1, -1, 10, 9, "05", " 7 "],
                  "encoded": ["", "0", "00", "1", "01", " 1", "-1", "10", "9", "7", "abc", "1.5"],
                  "native": [0, 1, 10, True, None, 1.5]},
    "f_duration": {"records": [0, 60, "1h", "90", 3600, "1970-01-01 00:01:00"],
                   "encoded": ["", "0", "60", "3600", "1h", "1 hour", "abc", "-1", "1.5"],
                   "native": [60, 0, None, "1h", True]},
    "f_decimal": {"records": ["0", "1.5", "1.50", "2", "-0.5", "0.000001", "10", "123456789.123456"],
                  "encoded": ["", "0", "0.0", "1.5", "1.500", "2", "-0.5", ".5", "1e1", "0.000001", "abc",
                              "123456789.123456"],
                  "native": [1.5, 0, 2, None, "1.50"]},
    "f_boolean": {"records": ["true", "false", "1", "0", "TRUE"],
                  "encoded": ["", "true", "false", "1", "0", "TRUE", "yes", "ru", "maybe"],
                  "native": [True, False, 1, 0, None]},
    "f_date": {"records": ["2024-01-02", "2024-12-31", "0999-01-02", "2024-01-02T10:00:00", "2023-06-15"],
               "encoded": ["", "2024-01-02", "2024-01-02 10:00:00", "2024", "01-02", "0999-01-02", "abc"],
               "native": [dt.date(2024, 1, 2), dt.datetime(2024, 1, 2, 23, 0), None, "2024-12-31"]},
    "f_datetime": {"records": ["2024-01-02 03:04:05", "2024-01-02T00:00:00", "2024-01-01 23:59:59",
                               "2024-01-02 03:04:05+02:00", "2024-01-02 00:00:01"],
                   "encoded": ["", "2024-01-02 03:04:05", "2024-01-02", "2024-01-02T01:04:05Z", "2024-01-02 03:04",
                               "03:04", "2024-01-01 23:59:59", "abc"],
                   "native": [dt.datetime(2024, 1, 2, 3, 4, 5), dt.date(2024, 1, 2), None]},
    "f_choice": {"records": ["low", "high", "10", " high "],
                 "encoded": ["", "low", "Low", "LOW", "high", " high", "10", "1", "x"],
                 "native": [10, "low", None]},
    "f_choice_int": {"records": [1, "2", 10, " 1"],
                     "encoded": ["", "1", "01", "10", "2", "9", "New"],
                     "native": [1, 10, "2", None, True]},
    "f_reference": {"records": [ACME, LOWER_ACME, SPACED_ACME, NAMELESS, ZERO],
                    "encoded": ["", ACME, "Acme", "acme", " Acme", "ACME", "Ac", "0", ACME.upper(), NOBODY],
                    "native": [ACME, "Acme", 0, None]},
    "f_email": {"records": ["a@example.com", "A@Example.com", "b@example.org"],
                "encoded": ["", "a@example.com", "A@EXAMPLE.COM", "example", "@", "not-an-email"],
                "native": ["a@example.com", None]},
    "f_url": {"records": ["https://example.com/a", "http://x.org", "https://EXAMPLE.com/b"],
              "encoded": ["", "https://example.com/a", "example", "HTTP", "ftp://x"],
              "native": ["http://x.org", None]},
    "f_reference.name": {"records": [], "encoded": ["", "Acme", "acme", "Ac", "0", " Acme"],
                         "native": ["Acme", 0, None]},
}


def field_of(path: str) -> str:
    return path.split(".")[0]


def write(folder: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    return folder


def definitions() -> dict[str, str]:
    fields = "\n".join(f"  {name}: {{type: {kind}{extra}}}" for name, (kind, extra) in FIELDS.items())
    return {
        f"tables/{TARGET}.yaml": f"table: {TARGET}\nlabel: Target\ndisplay: name\nfields:\n  name: {{type: string}}\n",
        f"tables/{ITEM}.yaml": f"table: {ITEM}\nlabel: Item\nfields:\n{fields}\n",
    }


def database(backend: str, base: Path):
    """A fresh empty database on `backend`: (url, drop)."""
    if backend == "sqlite":
        return f"sqlite:///{base / 'parity.db'}", lambda: None
    name = pg_pool().acquire()
    return _pg_url(name), lambda: pg_pool().release(name)


def make_records() -> list[dict]:
    """One record per row of tricky values (each field cycles through its own), and one all empty."""
    rows = max(len(v["records"]) for v in VALUES.values())
    records = []
    for i in range(rows):
        values = {name: spec["records"][i] for name, spec in VALUES.items()
                  if "." not in name and i < len(spec["records"])}
        records.append(values)
    return [*records, {}]


@contextmanager
def own_runtime(backend: str, base: Path, files: dict[str, str], fill) -> Iterator[Runtime]:
    """A runtime on a database of its own (`backend`) with the definitions `files`, initialised and
    filled by `fill(service)`, for a module's tests to share."""
    folder = write(base / "definitions", files)
    url, drop = database(backend, base)
    config = Config(database_url=url, definitions=str(folder), instance=str(base / "instance"),
                    queue=f"sqlite:///{base / 'queue.db'}")
    defs = load_folder(folder)
    runtime = Runtime(config, defs)
    try:
        initialise(config, defs, runtime=runtime)
        with runtime.transaction() as service:
            fill(service)
        yield runtime
    finally:
        runtime.engine.dispose()
        drop()


def fill(service) -> None:
    for target, name in TARGETS.items():
        service.insert(TARGET, {"sys_id": target, "name": name})
    for values in make_records():
        service.insert(ITEM, values)


@pytest.fixture(scope="module", params=BACKENDS)
def world(request, tmp_path_factory):
    """A runtime holding the tricky records, and those records as the record service reads them
    back (what a rule sees)."""
    base = tmp_path_factory.mktemp(f"parity-{request.param}")
    with own_runtime(request.param, base, definitions(), fill) as runtime:
        with runtime.transaction() as service:
            records = service.query(ITEM, Query())
        yield runtime, records


def sql_outcome(runtime: Runtime, node) -> set[str] | str:
    try:
        with runtime.transaction() as service:
            return {row["sys_id"] for row in service.query(ITEM, Query(node), ["sys_id"])}
    except QueryError as exc:
        return f"QueryError: {exc}"


def python_outcome(runtime: Runtime, records: list[dict], node) -> set[str] | str:
    tdef = runtime.defs.tables[ITEM]
    try:
        bound = bind_fields(node, runtime.defs.tables, tdef)  # what loading a rule's condition does
        with runtime.transaction() as service:
            return {r["sys_id"] for r in records if evaluate(bound, r, resolve=resolver(service, tdef, r))}
    except QueryError as exc:
        return f"QueryError: {exc}"


def conditions(path: str, op_name: str) -> list[tuple[str, object]]:
    """(how it was written, condition Node) for every tricky value of the field, encoded and native."""
    op = OPERATORS[op_name]
    spec = VALUES[path]
    if op.field:  # compared with every other field (and itself): those of another kind are refused alike
        others = list(VALUES)
        return [(written, parse_encoded(written).where) for written in (f"{path}{op.token}{o}" for o in others)] + [
            (f"{{field: {path}, op: {op_name}, value: {o}}}", from_data({"field": path, "op": op_name, "value": o}))
            for o in others]
    if op.parts:  # each part compared in each way, on every field: those not dates are refused alike
        written = [f"{path}DATEPART{value}@javascript:gs.datePart('{part}','{value}','{compare}')"
                   for part, values in (("dayofweek", ["tuesday", "7"]), ("week", ["1", "53"]),
                                        ("month", ["january", "12"]),
                                        ("quarter", ["1", "4"]), ("year", ["2024", "999"]), ("hour", ["0", "3am"]))
                   for value in values for compare in ("EE", "GT", "LT", "GE", "LE")]
        return [(text, parse_encoded(text).where) for text in written]
    if not op.takes_value:
        return [(f"{path}{op.token}", parse_encoded(f"{path}{op.token}").where)]
    if op.list_value:
        encoded = [",".join(pair) for pair in zip(spec["encoded"], spec["encoded"][1:], strict=False)]
        encoded += [spec["encoded"][1], ",".join(spec["encoded"])]
        natives = [spec["native"], [None, spec["native"][0]], []]
        # lists long enough to be one array parameter on PostgreSQL (caseloom.database.in_list)
        encoded.append(",".join(spec["encoded"] * (LONG_LIST // len(spec["encoded"]) + 1)))
        natives.append(spec["native"] * (LONG_LIST // len(spec["native"]) + 1))
    else:
        encoded, natives = spec["encoded"], spec["native"]
    written = [(f"{path}{op.token}{value}", None) for value in encoded]
    written += [(f"{{field: {path}, op: {op_name}, value: {value!r}}}", value) for value in natives]
    out = []
    for text, native in written:
        if text.startswith("{"):
            out.append((text, from_data({"field": path, "op": op_name, "value": native})))
        else:
            try:
                out.append((text, parse_encoded(text).where))
            except QueryError:  # a value the parser splits oddly (a comma): not a comparison
                continue
    return out


def test_every_queryable_field_type_has_tricky_values():
    """A new field type fails here until it has a field and tricky values in this test."""
    covered = {FIELDS[field_of(path)][0] for path in VALUES}
    assert covered == set(QUERYABLE), f"add a field and VALUES for: {sorted(set(QUERYABLE) - covered)}"


@pytest.mark.parametrize("op_name", QUERY_OPERATORS)
@pytest.mark.parametrize("path", list(VALUES))
def test_sql_and_python_agree(world, path, op_name):
    runtime, records = world
    disagreements = []
    for written, node in conditions(path, op_name):
        in_sql, in_python = sql_outcome(runtime, node), python_outcome(runtime, records, node)
        if in_sql != in_python:
            disagreements.append(f"{written}: SQL {describe(in_sql, records, path)} "
                                 f"but Python {describe(in_python, records, path)}")
    assert not disagreements, "\n".join(disagreements)


def describe(outcome, records: list[dict], path: str) -> str:
    if isinstance(outcome, str):
        return outcome
    values = sorted(repr(r.get(field_of(path))) for r in records if r["sys_id"] in outcome)
    return "{" + ", ".join(values) + "}"


def test_the_tricky_values_tell_the_operators_apart(world):
    """The records are not all alike: each operator matches some records and misses others for
    some value of some field (a test whose every query returns nothing could not fail)."""
    runtime, records = world
    told_apart, everything = set(), {r["sys_id"] for r in records}
    for path in VALUES:
        for op_name in QUERY_OPERATORS:
            for _, node in conditions(path, op_name):
                found = sql_outcome(runtime, node)
                if isinstance(found, set) and 0 < len(found) < len(records):
                    told_apart.add(op_name)
                if op_name == "anything":  # ServiceNow's "is anything": every record, whatever its value
                    assert found == everything, (path, found)
    # INSTANCEOF reads the class of a table that others extend (here it is refused on every field, alike in SQL and
    # Python): tests/test_second_app.py tells the loans app's classes apart with it
    assert told_apart == set(QUERY_OPERATORS) - {"anything", "instanceof"}


@pytest.mark.parametrize("kind", UNQUERYABLE)
def test_fields_that_cannot_be_queried_are_refused_alike(world, kind):
    """Journal and password fields (types whose `queryable` flag is off) are refused with one
    message by SQL and by rules, whatever the operator."""
    runtime, records = world
    for op_name in QUERY_OPERATORS:
        op = OPERATORS[op_name]
        value = (None if not op.takes_value else ["x"] if op.list_value else "f_string" if op.field
                 else {"part": "year", "value": "2024"} if op.parts else "x")
        node = from_data({"field": f"f_{kind}", "op": op_name, "value": value})
        expected = f"QueryError: f_{kind}: {kind} fields cannot be queried"
        assert sql_outcome(runtime, node) == expected
        assert python_outcome(runtime, records, node) == expected


@pytest.mark.parametrize(("condition", "expected"), [
    ("f_reference=Acme", {"Acme"}),  # the display value, exactly
    ("f_reference=acme", {"acme"}),
    (f"f_reference={ACME}", {"Acme"}),
    (f"f_referenceIN{ACME},acme", {"Acme", "acme"}),  # each item as `=` compares it
    ("f_referenceLIKEacm", {"Acme", "acme", " Acme"}),  # text operators read the display value
    ("f_reference!=Acme", {"acme", " Acme", None, "0", "(no reference)"}),
])
def test_a_reference_compared_with_a_display_value(world, condition, expected):
    """What a user sees: a reference compared with a name reads the referenced display field, in
    the list (SQL) and in a rule (Python) alike."""
    runtime, records = world
    node = parse_encoded(condition).where
    names = {r["sys_id"]: (TARGETS[r["f_reference"]] if r["f_reference"] else "(no reference)") for r in records}
    assert {names[i] for i in sql_outcome(runtime, node)} == expected
    assert {names[i] for i in python_outcome(runtime, records, node)} == expected


def test_binding_at_load_and_at_evaluation_mean_the_same(world):
    """`evaluate(..., table=, tables=)` binds an unbound condition for the call: same answers."""
    runtime, records = world
    tdef = runtime.defs.tables[ITEM]
    with runtime.transaction() as service:
        for path in VALUES:
            for _, node in conditions(path, "eq"):
                try:
                    bound = bind_fields(node, runtime.defs.tables, tdef)
                except QueryError:
                    continue
                for r in records:
                    resolve = resolver(service, tdef, r)
                    assert evaluate(node, r, resolve=resolve, table=tdef, tables=runtime.defs.tables) \
                        == evaluate(bound, r, resolve=resolve)


@pytest.mark.parametrize(("path", "before", "after", "condition", "fires"), [
    ("f_boolean", False, True, "f_booleanCHANGESTO1", True),
    ("f_boolean", False, True, "f_booleanCHANGESTOtrue", True),
    ("f_boolean", True, True, "f_booleanVALCHANGES", False),
    ("f_decimal", "1", "1.50", "f_decimalCHANGESTO1.5", True),
    ("f_decimal", "1.5", "1.50", "f_decimalVALCHANGES", False),  # the same number
    ("f_integer", 1, 2, "f_integerCHANGESFROM01", True),
    ("f_datetime", None, "2024-01-02T03:04:05", "f_datetimeCHANGESTO2024-01-02 03:04:05", True),
    ("f_choice", "low", "high", "f_choiceCHANGESTOHigh", False),  # a label is not the value
    ("f_reference", None, ACME, f"f_referenceCHANGESTO{ACME}", True),
    ("f_string", "abc", "ABC", "f_stringVALCHANGES", True),  # case counts, as in `=`
])
def test_change_operators_compare_values_as_eq_does(world, path, before, after, condition, fires):
    """A rule's `changes`, `changesto` and `changesfrom` (Python only) compare values in the field's
    type, as `=` does: a rule on `CHANGESTO1` fires for a boolean that becomes true."""
    runtime, _ = world
    tdef = runtime.defs.tables[ITEM]
    field = tdef.field(path)
    node = bind_fields(parse_encoded(condition).where, runtime.defs.tables, tdef)
    previous, record = {path: field.parse(before)}, {path: field.parse(after)}
    assert evaluate(node, record, previous=previous) is fires


def values_of(records: list[dict], outcome, *paths: str) -> list[tuple]:
    """The values at `paths` of the records in `outcome`, as text (a number as it reads: 1.5, not 1.500000)."""
    def text(value) -> str:
        if value is None or value == "":
            return "-"
        return str(value) if not isinstance(value, Decimal) else f"{value.normalize():f}"
    return sorted(tuple(text(r.get(p)) for p in paths) for r in records if r["sys_id"] in outcome)


@pytest.mark.parametrize(("condition", "expected"), [
    # each side in its own type (0 is 0.0), and two empty values (-) are the same
    ("f_integerSAMEASf_decimal", [("-", "-")] * 4 + [("0", "0")]),
    ("f_integerGT_FIELDf_decimal", [("10", "2"), ("5", "0.000001"), ("9", "-0.5")]),
    ("f_integerLT_OR_EQUALS_FIELDf_decimal", [("-1", "1.5"), ("0", "0"), ("1", "1.5"), ("7", "10")]),
    ("f_stringSAMEASf_text", [(" abc", " abc"), ("-", "-"), ("0", "0"), ("10", "10"), ("9", "9"), ("ABC", "ABC"),
                              ("a%b", "a%b"), ("a_b", "a_b"), ("abc", "abc"), ("abc ", "abc "), ("x,y", "x,y"),
                              ("École", "École")]),
    ("f_choice_intGT_FIELDf_integer", [("1", "0"), ("10", "-1"), ("2", "1")]),  # a choice by its value
])
def test_two_fields_of_a_record_compared(world, condition, expected):
    """ServiceNow's SAMEAS, NSAMEAS, GT_FIELD, GT_OR_EQUALS_FIELD, LT_FIELD and LT_OR_EQUALS_FIELD compare two
    fields of each record, in the list (SQL) and in a rule (Python) alike."""
    runtime, records = world
    node = parse_encoded(condition).where
    paths = (node.field, node.value)
    assert sorted(values_of(records, sql_outcome(runtime, node), *paths)) == sorted(expected)
    assert python_outcome(runtime, records, node) == sql_outcome(runtime, node)
    negated = parse_encoded(condition.replace("SAMEAS", "NSAMEAS")).where
    if "SAMEAS" in condition:  # the negation: every other record
        assert sql_outcome(runtime, negated) == {r["sys_id"] for r in records} - sql_outcome(runtime, node)


@pytest.mark.parametrize(("condition", "error"), [
    ("f_dateSAMEASf_datetime", "f_dateSAMEASf_datetime: f_date is a date and f_datetime is a date and time; only "
                               "fields of one kind compare"),
    ("f_stringGT_FIELDf_integer", "f_stringGT_FIELDf_integer: f_string is a text and f_integer is a number; only "
                                  "fields of one kind compare"),
    ("f_referenceSAMEASf_string", "f_referenceSAMEASf_string: f_reference is a reference to pq_target and f_string "
                                  "is a text; only fields of one kind compare"),
    ("f_referenceGT_FIELDf_reference", "f_referenceGT_FIELDf_reference: references have no order; compare them with "
                                       "SAMEAS or NSAMEAS"),
    ("f_integerSAMEASf_nothing", "f_nothing: table 'pq_item' has no field 'f_nothing'"),
    ("f_integerSAMEASf_journal", "f_journal: journal fields cannot be queried"),
])
def test_fields_that_do_not_compare_are_refused_alike(world, condition, error):
    runtime, records = world
    node = parse_encoded(condition).where
    assert str(sql_outcome(runtime, node)).startswith("QueryError: " + error)
    assert str(python_outcome(runtime, records, node)).startswith("QueryError: " + error)


@pytest.mark.parametrize(("written", "error"), [
    ("f_integerSAMEASjavascript:gs.getUserID()", "f_integer: SAMEAS compares with another field; its value is that "
     "field's name (e.g. f_integerSAMEASother_field), not 'javascript:gs.getUserID()'"),
    ("f_integerGT_FIELD", "f_integer: GT_FIELD compares with another field; its value "
     "is that field's name (e.g. f_integerGT_FIELDother_field), not ''"),
    ({"field": "f_integer", "op": "sameas", "value": 3}, "condition.value: f_integer: SAMEAS compares with another "
     "field; its value is that field's name (e.g. f_integerSAMEASother_field), not '3'"),
    ({"field": "f_integer", "op": "gt_or_equals_field", "value": "f_decimal"}, None),  # ServiceNow's name as an alias
])
def test_a_field_comparison_names_a_field(written, error):
    """What is not a field's name is refused where the condition is read, before any query runs."""
    if error is None:
        assert from_data(written).op == "ge_field"
        return
    with pytest.raises(QueryError) as caught:
        parse_encoded(written) if isinstance(written, str) else from_data(written)
    assert str(caught.value) == error
