"""What an effect's parser is given at load: the table it runs on, and checks that report located errors.

A parser never raises for a mistake in the definitions: it reports each one at its place
(`error(at, message)`, `at` a path of keys into the YAML document) and goes on, so
`caseloom validate` lists every mistake in one run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from ..definitions.basics import parse_property_value
from ..definitions.model import FieldDef, PropertyDef, TableDef
from ..definitions.tables import resolve_path
from ..definitions.yamlsource import KEY, Location, SourceDocument
from ..fieldtypes import FieldValueError
from ..query.conditions import All, AnyOf, Not, PropertyTerm, QueryError, Term, from_data, parse_encoded, terms_of
from ..query.meaning import bind_fields
from ..templates import Template, TemplateProblem, compile_template, is_template, template_problems

# The names an effect's templates may use.
EFFECT_NAMES = ("record", "previous", "inputs", "created", "user", "now")
# Operators whose value is one of the field's own values (a choice value must be one of its choices).
VALUE_OPERATORS = ("eq", "ne", "in", "notin", "changesto", "changesfrom")
DYNAMIC = "javascript:"  # ServiceNow's dynamic values (`javascript:gs.getUserID()`), resolved when run


class Builder:
    """Checks for one effect list: `table` is the table the effects run on."""

    def __init__(self, tables: Mapping[str, TableDef], table: TableDef, properties: Mapping[str, PropertyDef],
                 doc: SourceDocument, errors: list, names: tuple[str, ...] = EFFECT_NAMES,
                 inputs: Mapping[str, Any] | None = None, template_table: TableDef | None = None):
        self.tables, self.table, self.properties = tables, table, properties
        self.doc, self.errors, self.names = doc, errors, names
        self.inputs = inputs  # an action's inputs by name (InputDef); None where effects have none (rules)
        self.template_table = template_table or table  # the table `record` in templates is a record of

    def error(self, at: tuple, message: str) -> None:
        self.errors.append(self.doc.error(at, message))

    def location(self, at: tuple) -> Location:
        return self.doc.where(*at)

    def errors_seen(self) -> int:
        return len(self.errors)

    def on(self, table: TableDef) -> Builder:
        """The same checks for effects that work on another table's records (templates still read this one)."""
        return Builder(self.tables, table, self.properties, self.doc, self.errors, self.names, self.inputs,
                       self.template_table)

    # -- names ---------------------------------------------------------------------------------

    def target(self, name: Any, at: tuple) -> TableDef | None:
        if name not in self.tables:
            self.error(at, f"unknown table {name!r}")
            return None
        return self.tables[name]

    def field(self, path: Any, at: tuple, table: TableDef | None = None, *, own: bool = False) -> FieldDef | None:
        """The field `path` names (a dot-walk unless `own`), or None after reporting it."""
        table = table or self.table
        field = table.field(path) if own else resolve_path(self.tables, table, str(path))
        if field is None:
            kind = "a field" if own or "." not in str(path) else "a field path"
            self.error(at, f"{path!r} is not {kind} of {table.name!r}")
        return field

    def reference(self, path: Any, at: tuple, table: TableDef | None = None, to: str | None = None
                  ) -> FieldDef | None:
        """A reference field of `table`, pointing at `to` or one of its ancestors when given."""
        table = table or self.table
        field = self.field(path, at, table, own=True)
        if field is None:
            return None
        if field.type != "reference":
            self.error(at, f"{path!r} of {table.name!r} is a {field.type} field, not a reference")
            return None
        if to is not None and to not in _lineage(self.tables, field.reference) \
                and field.reference not in _lineage(self.tables, to):
            self.error(at, f"{table.name}.{path} refers to {field.reference!r}, not to {to!r}")
            return None
        return field

    def property(self, name: Any, at: tuple, ptype: str | None = None) -> PropertyDef | None:
        prop = self.properties.get(name)
        if prop is None:
            known = ", ".join(sorted(self.properties)) or "none are declared"
            self.error(at, f"unknown system property {name!r} (known: {known})")
            return None
        if ptype is not None and prop.type != ptype:
            self.error(at, f"system property {name!r} is a {prop.type}, not a {ptype}")
        return prop

    def field_list_property(self, name: Any, at: tuple, table: TableDef | None = None) -> PropertyDef | None:
        """A list property naming fields of `table` (this builder's unless given), each name of its declared
        default checked: a field it does not have would be left out without a word at run time."""
        prop = self.property(name, at, "list")
        table = table or self.table
        if prop is None or table is None:
            return prop
        for field in prop.default or ():
            if table.field(str(field)) is None:
                self.error(at, f"system property {name!r} lists {field!r} in its default, which is not a field of "
                               f"{table.name!r}")
        return prop

    # -- values --------------------------------------------------------------------------------

    def template(self, text: Any, at: tuple, names: tuple[str, ...] | None = None) -> Template | None:
        """A compiled template, its names and the fields it reads checked; None after reporting."""
        text = str(text)
        problems = template_problems(text, names or self.names, self._path_problem)
        for problem in problems:
            self.error(at, problem)
        if problems:
            return None
        try:
            return compile_template(text)
        except TemplateProblem as exc:  # reported above; here for the type checker
            self.error(at, str(exc))
            return None

    def _path_problem(self, root: str, path: str) -> str | None:
        field = resolve_path(self.tables, self.template_table, path)
        if field is None:
            return f"{root}.{path}: {path!r} is not a field of {self.template_table.name!r}"
        if field.ftype.hidden:
            return f"{root}.{path}: {field.type} fields are never read back, not even by a template"
        return None

    def text(self, value: Any, at: tuple) -> Any:
        """A string that may be a template: compiled if it is one."""
        if is_template(value):
            return self.template(value, at)
        return value

    def value(self, field: FieldDef, raw: Any, at: tuple) -> Any:
        """A value for `field`: a compiled template (parsed when rendered), or the parsed constant."""
        if is_template(raw):
            return self.template(raw, at)
        if isinstance(raw, str) and raw.startswith(DYNAMIC):
            self.error(at, f"{raw!r}: dynamic values are for conditions; use a template such as "
                           f"{{{{ user.sys_id }}}} or {{{{ now }}}} in a value")
            return None
        if field.type == "choice" and raw not in (None, "") and field.choices and field.choice_label(raw) is None:
            self.error(at, f"{raw!r} is not a choice of {field.table}.{field.name} "
                           f"({', '.join(f'{v}: {label}' for v, label in field.choices)})")
            return None
        try:
            return field.parse(raw)
        except FieldValueError as exc:
            self.error(at, f"{field.name}: {exc}")
            return None

    def values(self, mapping: Any, at: tuple, table: TableDef | None = None) -> tuple[tuple[str, Any], ...]:
        """`{field: value}` of a table's own fields, each value checked."""
        table = table or self.table
        out = []
        for name, raw in (mapping or {}).items():
            field = self.field(name, at + (name, KEY), table, own=True)
            if field is not None:
                if field.system:
                    self.error(at + (name,), f"{name!r} is a system field: the platform sets it")
                    continue
                if field.ftype.hidden:
                    self.error(at + (name,), f"{name!r} is a {field.type} field: effects do not set secrets")
                    continue
                out.append((name, self.value(field, raw, at + (name,))))
        return tuple(out)

    def journal(self, mapping: Any, at: tuple, table: TableDef | None = None) -> tuple[tuple[str, Any], ...]:
        """`{journal field: text}`."""
        table = table or self.table
        out = []
        for name, text in (mapping or {}).items():
            field = self.field(name, at + (name, KEY), table, own=True)
            if field is not None and not field.ftype.journal:
                self.error(at + (name,), f"{name!r} is not a journal field of {table.name!r}")
            elif field is not None:
                out.append((name, self.text(text, at + (name,))))
        return tuple(out)

    # -- conditions ----------------------------------------------------------------------------

    def condition(self, data: Any, at: tuple, table: TableDef | None = None, *, templates: bool = False):
        """A condition Node; every field, property and choice value checked at its place.
        `templates`: values may be templates, compiled here and rendered when it runs."""
        if data is None:
            return None
        try:
            node = from_data(data)
        except QueryError as exc:
            self.error(_culprit(data, at), f"condition: {exc}")
            return None
        table = table or self.table
        ok = self._check(data, node, at, table, templates)
        if not ok:
            return None
        node = with_templates(node) if templates else node
        try:  # each term bound to its field: a value the field refuses is an error here, not when it runs
            return bind_fields(node, self.tables, table)
        except QueryError as exc:
            self.error(at, f"condition: {exc}")
            return None

    def _check(self, data: Any, node, at: tuple, table: TableDef, templates: bool) -> bool:
        if isinstance(data, str):  # an encoded query: its terms are located at the string
            query = parse_encoded(data)
            ok = all(self._check_term(t, at, at, table, templates) for t in terms_of(query.where))
            return ok and all(self.field(path, at, table) is not None for path, _ in query.order)
        if isinstance(node, (All, AnyOf)):
            key = "all" if isinstance(node, All) else "any"
            return all([self._check(d, n, at + (key, i), table, templates)
                        for i, (d, n) in enumerate(zip(data[key], node.items, strict=True))])
        if isinstance(node, Not):
            return self._check(data["not"], node.item, at + ("not",), table, templates)
        return self._check_term(node, at + (("property",) if isinstance(node, PropertyTerm) else ("field",)),
                                at + ("value",), table, templates)

    def _check_term(self, term, name_at: tuple, value_at: tuple, table: TableDef, templates: bool) -> bool:
        if isinstance(term, PropertyTerm):
            prop = self.property(term.name, name_at)
            if prop is not None and term.value is not None:
                try:
                    parse_property_value(prop.type, term.value)
                except FieldValueError as exc:
                    self.error(value_at, f"{term.value!r} is not a value of the {prop.type} property "
                                         f"{prop.name!r}: {exc}")
                    return False
            return prop is not None
        field = self.field(term.field, name_at, table)
        if field is None:
            return False
        if field.ftype.hidden:  # a secret cannot be probed by a condition (journal fields can: `changes`)
            self.error(name_at, f"{term.field!r}: {field.type} fields cannot be used in a condition")
            return False
        values = term.value if isinstance(term.value, (list, tuple)) else [term.value]
        for i, value in enumerate(values):
            at = value_at + ((i,) if isinstance(term.value, list) else ())
            if is_template(value):
                if not templates:
                    self.error(at, f"{value!r}: templates are not evaluated in this condition")
                    return False
                if self.template(value, at) is None:
                    return False
            elif (term.op in VALUE_OPERATORS and field.type == "choice" and field.choices
                  and value not in (None, "") and not str(value).startswith(DYNAMIC)
                  and field.choice_label(value) is None):
                self.error(at, f"{value!r} is not a choice of {field.table}.{field.name} "
                               f"({', '.join(f'{v}: {label}' for v, label in field.choices)})")
                return False
        return True

    # -- nested effects ------------------------------------------------------------------------

    def effects(self, items: Any, at: tuple) -> tuple:
        from .registry import parse_effects

        return parse_effects(self, items, at)


def _culprit(data: Any, at: tuple) -> tuple:
    """Where in a YAML condition the part that does not parse is: the term, and its `op` when the
    operator is what is wrong."""
    if isinstance(data, dict):
        for key in ("all", "any"):
            for i, item in enumerate(data.get(key) or ()):
                try:
                    from_data(item)
                except QueryError:
                    return _culprit(item, at + (key, i))
        if "not" in data:
            return _culprit(data["not"], at + ("not",))
        if "op" in data:
            try:
                from_data(data)
            except QueryError as exc:
                if "operator" in str(exc):
                    return at + ("op",)
    return at


def _lineage(tables: Mapping[str, TableDef], name: str | None) -> tuple[str, ...]:
    """The table and its ancestors."""
    out = []
    while name and name in tables and name not in out:
        out.append(name)
        name = tables[name].extends
    return tuple(out)


# -- conditions whose values are templates -------------------------------------------------------

def with_templates(node):
    """The node with template strings among its values compiled (rendered by `bind`)."""
    if isinstance(node, (All, AnyOf)):
        return type(node)(tuple(with_templates(item) for item in node.items))
    if isinstance(node, Not):
        return Not(with_templates(node.item))
    if isinstance(node, Term):
        if isinstance(node.value, (list, tuple)):
            return replace(node, value=[_compiled(v) for v in node.value])
        return replace(node, value=_compiled(node.value))
    return node


def _compiled(value: Any) -> Any:
    return compile_template(value) if is_template(value) else value


def has_templates(node) -> bool:
    if isinstance(node, (All, AnyOf)):
        return any(has_templates(item) for item in node.items)
    if isinstance(node, Not):
        return has_templates(node.item)
    if isinstance(node, Term):
        values = node.value if isinstance(node.value, (list, tuple)) else [node.value]
        return any(isinstance(v, Template) for v in values)
    return False


def bind(node, render: Callable[[Template], str]):
    """The node with its templates rendered (for a condition that depends on the record)."""
    if node is None or not has_templates(node):
        return node
    if isinstance(node, (All, AnyOf)):
        return type(node)(tuple(bind(item, render) for item in node.items))
    if isinstance(node, Not):
        return Not(bind(node.item, render))
    if isinstance(node.value, (list, tuple)):  # `replace` keeps a bound term's field
        return replace(node, value=[render(v) if isinstance(v, Template) else v for v in node.value])
    return replace(node, value=render(node.value) if isinstance(node.value, Template) else node.value)
