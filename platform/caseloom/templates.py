"""Jinja templates in Jinja's sandbox, for effect values and notification texts.

A template is compiled once, when the definitions load (`compile_template`), and checked
there: its syntax, the names it uses and the fields it reads. `record.a.b` and `previous.a.b`
are field paths, dot-walks included: a compiled template reads them as one key
(`record["a.b"]`), so whoever renders it supplies the values of the paths in `walks`, for a
whole batch of records at once where the work is set-based (see `effects.walks`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer


def _shown(value: Any) -> Any:
    """What an output shows: an empty value (a reference with no record, a field never set) is
    nothing, never the word None."""
    return "" if value is None else value


_env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, finalize=_shown)

# The names a record's fields are read through: `record.field`, `record.reference.field` (`child`: a
# notification's child record, each child's own e-mail, see automation.notifications).
RECORD_ROOTS = ("record", "previous", "child")


class TemplateProblem(ValueError):
    """A template that does not compile or render; the message says which and why."""


class _FieldPaths(NodeTransformer):
    """`record.a.b` (or `record["a"].b`) becomes `record["a.b"]`, and each path is remembered."""

    def __init__(self):
        self.paths: dict[str, list[tuple[str, int]]] = {}

    def visit_Getattr(self, node):  # noqa: N802  (Jinja's visitor names)
        return self._path(node) or self.generic_visit(node)

    def visit_Getitem(self, node):  # noqa: N802
        return self._path(node) or self.generic_visit(node)

    def _path(self, node):
        names = []
        current = node
        while True:
            if isinstance(current, nodes.Getattr):
                names.append(current.attr)
            elif isinstance(current, nodes.Getitem) and isinstance(current.arg, nodes.Const) \
                    and isinstance(current.arg.value, str):
                names.append(current.arg.value)
            else:
                break
            current = current.node
        if not (isinstance(current, nodes.Name) and current.name in RECORD_ROOTS and names):
            return None
        path = ".".join(reversed(names))
        self.paths.setdefault(current.name, []).append((path, node.lineno))
        root = nodes.Name(current.name, "load", lineno=node.lineno)
        return nodes.Getitem(root, nodes.Const(path, lineno=node.lineno), "load", lineno=node.lineno)


@dataclass(frozen=True, eq=False)
class Template:
    """A compiled template: render it with a context holding the names it uses."""

    text: str
    names: frozenset[str]  # the context names it reads (record, user, now, ...)
    paths: tuple[tuple[str, str, int], ...]  # (root, field path, line) for every record/previous read
    _jinja: Any = field(repr=False)
    _parts: tuple | None = field(repr=False)  # plain substitution: see _Substitution

    @property
    def walks(self) -> tuple[str, ...]:
        """The dot-walk paths it reads from `record` (a reference's field: `account.name`)."""
        return tuple(dict.fromkeys(p for root, p, _ in self.paths if root == "record" and "." in p))

    @property
    def previous_walks(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p for root, p, _ in self.paths if root == "previous" and "." in p))

    def render(self, context: dict[str, Any]) -> str:
        if self._parts is not None:
            rendered = _Substitution(self._parts).render(context)
            if rendered is not None:
                return rendered
        try:
            return self._jinja.render(**context)
        except TemplateError as exc:
            raise TemplateProblem(f"template {self.text!r}: {exc}") from None
        except (TypeError, ValueError, ArithmeticError, LookupError) as exc:  # a filter given the wrong value
            raise TemplateProblem(f"template {self.text!r}: {exc}") from None


@lru_cache(maxsize=4096)
def compile_template(text: str) -> Template:
    """Compile a template; raises TemplateProblem with the line of a syntax error."""
    try:
        tree = _env.parse(text)
    except TemplateError as exc:
        line = getattr(exc, "lineno", None)
        where = f" (line {line} of the template)" if line and "\n" in text else ""
        raise TemplateProblem(f"template syntax error{where}: {getattr(exc, 'message', None) or exc}") from None
    finder = _FieldPaths()
    tree = finder.visit(tree)
    names = frozenset(meta.find_undeclared_variables(tree))
    jinja = _env.template_class.from_code(_env, _env.compile(tree), _env.make_globals(None), None)
    paths = tuple((root, path, line) for root, found in finder.paths.items() for path, line in found)
    return Template(text, names, paths, jinja, _substitution_parts(tree))


def bare_uses(text: str, root: str) -> bool:
    """Whether every read of `root` in the template is shown as it is (`{{ child.number }}`), never
    tested, filtered or computed with: what may be filled in afterwards, in SQL."""
    try:
        tree = _FieldPaths().visit(_env.parse(text))
    except TemplateError:
        return True  # reported where the template is compiled
    reads = [n for n in tree.find_all(nodes.Getitem) if isinstance(n.node, nodes.Name) and n.node.name == root]
    shown = [n for out in tree.find_all(nodes.Output) for n in out.nodes
             if isinstance(n, nodes.Getitem) and isinstance(n.node, nodes.Name) and n.node.name == root]
    return len(reads) == len(shown)


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def template_problems(text: str, names: Iterable[str], check_path: Callable[[str, str], str | None] | None = None
                      ) -> list[str]:
    """What is wrong with a template used where `names` are given: a syntax error, an unknown name
    (a typo: `recrod`), or (with `check_path(root, path)`) a field path that does not exist."""
    try:
        template = compile_template(text)
    except TemplateProblem as exc:
        return [str(exc)]
    known = set(names)
    problems = [f"template {text!r}: unknown name {name!r} (known: {', '.join(sorted(known))})"
                for name in sorted(template.names - known)]
    if check_path is not None:
        for root, path, _ in template.paths:
            if root in known:
                problem = check_path(root, path)
                if problem:
                    problems.append(f"template {text!r}: {problem}")
    return problems


def render(text: str | Template, context: dict[str, Any]) -> str:
    template = text if isinstance(text, Template) else compile_template(text)
    return template.render(context)


class _Substitution:
    """A template that is only text and `{{ name.key }}` outputs of plain values, rendered by
    joining strings: notifications render once per recipient record, a hundred thousand times for
    a large major case, and Jinja's per-render context costs fifty times more. Anything else
    (a missing key, a value that is not plain data) is left to Jinja, so the output is Jinja's."""

    PLAIN = (str, int, float, bool, type(None))

    def __init__(self, parts: tuple):
        self.parts = parts

    def render(self, context: dict[str, Any]) -> str | None:
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            holder = context.get(part[0])
            if not isinstance(holder, dict) or part[1] not in holder:
                return None
            value = holder[part[1]]
            if not isinstance(value, self.PLAIN):
                return None
            out.append(value if isinstance(value, str) else "" if value is None else str(value))
        return "".join(out)


def _substitution_parts(tree) -> tuple | None:
    body = tree.body
    if len(body) != 1 or not isinstance(body[0], nodes.Output):
        return None
    parts: list = []
    for node in body[0].nodes:
        if isinstance(node, nodes.TemplateData):
            parts.append(node.data)
        elif isinstance(node, nodes.Getitem) and isinstance(node.node, nodes.Name) \
                and node.node.name in RECORD_ROOTS and isinstance(node.arg, nodes.Const):
            parts.append((node.node.name, node.arg.value))
        elif (isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name)
              and not hasattr(dict, node.attr)):  # `inputs.items` would be dict's method in Jinja
            parts.append((node.node.name, node.attr))
        else:
            return None
    return tuple(parts)


def substitution_parts(text: str | Template) -> list | None:
    """A plain-substitution template as its parts: strings, and (name, key) for `{{ name.key }}`;
    None for any other template (for rendering it in SQL, where Python's str() of each value is
    the database's text of it)."""
    try:
        template = text if isinstance(text, Template) else compile_template(text)
    except TemplateProblem:
        return None
    return None if template._parts is None else list(template._parts)


def render_value(value: Any, context: dict[str, Any]) -> Any:
    """Render strings that contain a template; leave every other value as it is."""
    if isinstance(value, Template):
        return value.render(context)
    if is_template(value):
        return render(value, context)
    return value
