"""Member lists and declared lists: from documents to frozen objects, cross-checked."""

from __future__ import annotations

import csv
import io
import posixpath
import re
from collections.abc import Callable
from pathlib import Path

from ..config import Config
from ..query.conditions import QueryError, fields_of, parse_encoded
from ..sandbox.policy import compile_script
from ..sandbox.result import ScriptRefused
from ..sandbox.sources import SCRIPT_PATH, script_source
from .behaviour import _Checker
from .model import DeclaredList, MemberListDef, MemberType, TableDef, frozen_map
from .yamlsource import SourceDocument

# The first word after /api/caseloom/ names a member list in its routes (/api/caseloom/NAME/{sys_id}/import);
# these words are other routes of the API, so no member list may take them.
RESERVED_NAMES = ("actions", "definitions", "email", "jobs", "openapi", "similar")

# The key a declared-list file names its list with: `declared_list:`, or its first name `recipients_list:`.
DECLARED_KEYS = ("declared_list", "recipients_list")


def build_member_lists(docs: list[SourceDocument], tables: dict, roles: dict, errors: list) -> dict[str, MemberListDef]:
    lists: dict[str, MemberListDef] = {}
    seen: dict[str, object] = {}
    for doc in docs:
        check = _Checker(doc, tables, roles, errors)
        data = doc.data
        if data["member_list"] in RESERVED_NAMES:
            check.error(("member_list",), f"{data['member_list']!r} is an API route (/api/caseloom/"
                                          f"{data['member_list']}); give the member list another name")
        elif data["member_list"] in seen:
            check.error(("member_list",), f"member list {data['member_list']!r} is already declared at "
                                          f"{seen[data['member_list']]}")
        else:
            seen[data["member_list"]] = doc.where("member_list")
        table = check.table(data["table"], ("table",))
        if table is None:
            continue
        for key in ("type_field", "conditions_field", "script_flag_field", "script_field"):
            if key in data:
                check.field(table, data[key], (key,))
        types = {}
        for name, spec in data["types"].items():
            mtype = _member_type(check, table, data, name, spec)
            if mtype is not None:
                types[name] = mtype
        lists[data["member_list"]] = MemberListDef(
            data["member_list"], table.name, data["type_field"], frozen_map(types), data.get("conditions_field"),
            data.get("script_flag_field"), data.get("script_field"), data.get("dynamic_field"))
    return lists


def _member_type(check: _Checker, table: TableDef, data: dict, name: str, spec: dict) -> MemberType | None:
    where = ("types", name)
    target = check.table(spec["table"], where + ("table",))
    members = check.table(spec["members"], where + ("members",))
    if target is None or members is None:
        return None
    for key, owner, expected in (("list_field", members, table.name), ("member_field", members, target.name)):
        field = check.field(owner, spec[key], where + (key,))
        if field is not None and (field.type != "reference" or field.reference != expected):
            check.error(where + (key,), f"{spec[key]!r} must be a reference to {expected!r}")
    if data.get("dynamic_field"):
        check.field(members, data["dynamic_field"], ("dynamic_field",))
    for i, key in enumerate(spec.get("match", ["sys_id"])):
        check.field(target, key, where + ("match", i))
    return MemberType(name, target.name, members.name, spec["list_field"], spec["member_field"],
                      tuple(spec.get("match", ["sys_id"])), spec.get("result_key"))


def build_declared_lists(docs: list[SourceDocument], member_lists: dict[str, MemberListDef], errors: list,
                         read_file: Callable[[str, str], str | None], *, tables: dict[str, TableDef] | None = None,
                         scripts_dir: str | Path | None = None, root: str | None = None) -> list[DeclaredList]:
    """Lists declared in YAML (`declared_list:`, or its first name `recipients_list:`), each checked
    against its member list: the type, the fields its `conditions` read (when `tables` is given),
    its `script` file and its `import` file (a CSV next to the YAML, read with `read_file`). A
    script file is looked for in the scripts folder (`scripts_dir`, else CASELOOM_SCRIPTS, as the
    runtime reads it), then in the definitions folder `root` (an application's own `scripts/`), then next
    to the YAML; found in either of the last two, the list holds the script's text."""
    declared: list[DeclaredList] = []
    seen: dict[tuple[str, str], str] = {}
    for doc in docs:
        data = doc.data
        name_key = next(k for k in DECLARED_KEYS if k in data)
        mdef = _member_list_of(doc, member_lists, errors, read_file)
        if mdef is None:
            continue
        mtype = mdef.types.get(data["type"])
        if mtype is None:
            errors.append(doc.error(("type",), f"{data['type']!r} is not a type of member list {mdef.name!r} "
                                               f"(one of {', '.join(mdef.types)})"))
            continue
        first = seen.get((mdef.name, data[name_key]))
        if first is not None:
            errors.append(doc.error((name_key,), f"list {data[name_key]!r} of member list {mdef.name!r} is already "
                                                 f"declared at {first}"))
            continue
        seen[(mdef.name, data[name_key])] = str(doc.where(name_key))
        built = _sources(doc, mdef, mtype, errors, read_file, tables, scripts_dir, root)
        if built is not None:
            conditions, script, text = built
            declared.append(DeclaredList(data[name_key], mdef.name, data["type"], conditions, script, text,
                                         data.get("description", "")))
    return declared


def _member_list_of(doc: SourceDocument, member_lists: dict[str, MemberListDef], errors: list,
                    read_file: Callable[[str, str], str | None]) -> MemberListDef | None:
    """The member list a declared list belongs to: the one it names, or the only one there is.
    A member list whose own file has errors is reported there, not again at each of its lists."""
    named = doc.data.get("member_list")
    if named is not None:
        if named not in member_lists and named not in _broken_member_lists(doc, errors, read_file):
            known = f"; known: {', '.join(member_lists)}" if member_lists else "; none is defined (`member_list:` kind)"
            errors.append(doc.error(("member_list",), f"unknown member list {named!r}{known}"))
        return member_lists.get(named)
    if len(member_lists) == 1:
        return next(iter(member_lists.values()))
    name_key = next(k for k in DECLARED_KEYS if k in doc.data)
    if not member_lists and _broken_member_lists(doc, errors, read_file):
        return None
    if not member_lists:
        errors.append(doc.error((name_key,), "there is no member list to declare this list in: define one "
                                             "(a file with `member_list:`, `table:` and `types:`)"))
    else:
        errors.append(doc.error((name_key,), f"say which member list it belongs to (`member_list:` one of "
                                             f"{', '.join(member_lists)})"))
    return None


# A member-list file, told from its text alone: `member_list: NAME` and `types:` at the top level.
MEMBER_LIST_NAME = re.compile(r"""^member_list:[ \t]*["']?([\w.-]+)["']?[ \t]*(?:#.*)?$""", re.MULTILINE)
MEMBER_LIST_TYPES = re.compile(r"^types:", re.MULTILINE)
DECLARED_LIST_KEY = re.compile(rf"^(?:{'|'.join(DECLARED_KEYS)}):", re.MULTILINE)


def _broken_member_lists(doc: SourceDocument, errors: list, read_file) -> set[str]:
    """The names of the member lists whose files already have errors, and so were not built (their
    text is read again: a file with errors never becomes a document)."""
    names = set()
    here = posixpath.dirname(doc.path)
    for path in {error.location.path for error in errors}:
        text = read_file(doc.path, posixpath.relpath(path, here)) if path.endswith((".yaml", ".yml")) else None
        name = MEMBER_LIST_NAME.search(text or "")
        if name and MEMBER_LIST_TYPES.search(text) and not DECLARED_LIST_KEY.search(text):
            names.add(name.group(1))
    return names


def _sources(doc: SourceDocument, mdef: MemberListDef, mtype: MemberType, errors: list, read_file,
             tables: dict | None, scripts_dir, root: str | None = None
             ) -> tuple[str | None, str | None, str | None] | None:
    """(conditions, script, import text) of a declared list, each checked; None after an error."""
    data, count = doc.data, len(errors)
    for key, field in (("conditions", mdef.conditions_field), ("script", mdef.script_field)):
        if key in data and not field:
            errors.append(doc.error((key,), f"member list {mdef.name!r} has no {key}_field, so its lists "
                                            f"cannot be built by {key}"))
    if "script" in data and mdef.script_field and not mdef.script_flag_field:
        errors.append(doc.error(("script",), f"member list {mdef.name!r} has no script_flag_field, so a list's "
                                             f"script never runs"))
    if "conditions" in data and tables is not None and mtype.table in tables:
        _check_conditions(doc, tables, tables[mtype.table], errors)
    elif "conditions" in data:
        try:
            parse_encoded(data["conditions"])
        except QueryError as exc:
            errors.append(doc.error(("conditions",), str(exc)))
    script = _script(doc, errors, scripts_dir, root) if "script" in data else None
    text = None
    if "import" in data:
        text = read_file(doc.path, data["import"])
        if text is None:
            errors.append(doc.error(("import",), f"file {data['import']!r} not found next to {doc.path}"))
        else:
            _check_import_header(doc, mtype, text, errors)
    return None if len(errors) > count else (data.get("conditions"), script, text)


def _check_conditions(doc: SourceDocument, tables: dict, table: TableDef, errors: list) -> None:
    """The encoded query parses and every field it reads or sorts by is a field of the type's table."""
    check = _Checker(doc, tables, {}, errors)
    try:
        query = parse_encoded(doc.data["conditions"])
    except QueryError as exc:
        check.error(("conditions",), str(exc))
        return
    for path in dict.fromkeys(fields_of(query.where) + [p for p, _ in query.order]):
        check.field(table, path, ("conditions",))


def _script(doc: SourceDocument, errors: list, scripts_dir, root: str | None = None) -> str | None:
    """A declared list's script: its text as written, a path into the scripts folder (kept as a
    path: the runtime reads the file at each build), or a file next to the YAML (read now: the
    list then holds the script's text). A path found in neither place is an error; a scripts
    folder that is not there at all (a worker started elsewhere) cannot be checked. Whatever
    text is found is compiled under the sandbox's policy, as a build would before running it."""
    value = doc.data["script"]
    text = value.strip()
    if "\n" in text or not SCRIPT_PATH.match(text):
        _compiles(doc, errors, value, "the script")
        return value  # the script itself
    folder = Path(scripts_dir or Config.from_env().scripts)
    try:
        source, shown = script_source(None, text, doc.path, folder)
        _compiles(doc, errors, source, shown)
        return text
    except ScriptRefused as exc:
        outside = "inside the scripts folder" in exc.why
    for beside in (Path(doc.path).parent, *((Path(root),) if root else ())):  # next to the YAML, or in the app
        path = (beside / text).resolve()
        if path.is_relative_to(beside.resolve()) and path.is_file():
            try:
                source = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                errors.append(doc.error(("script",), f"cannot read the script {path}: {exc}"))
                return None
            _compiles(doc, errors, source, str(beside / text))
            return source
    if outside:
        errors.append(doc.error(("script",), f"script path {text!r} leaves the scripts folder {folder}"))
    elif folder.is_dir():
        errors.append(doc.error(("script",), f"script file {text!r} not found: not in the scripts folder {folder}, "
                                             f"the definitions folder {root or '.'} nor next to {doc.path}"))
    return text


def _compiles(doc: SourceDocument, errors: list, source: str, name: str) -> None:
    """An error at the `script` key for a script the sandbox would refuse before running it (a syntax
    error, an import, a name the policy forbids), naming its line: `the script's line 2: ...` for one
    written in the YAML, `scripts/pools/printers.py:2: ...` for a file."""
    try:
        compile_script(source, name)
    except ScriptRefused as exc:
        where = f"the script's line {exc.line}" if name == "the script" else f"{exc.filename}:{exc.line}"
        errors.append(doc.error(("script",), f"{where}: {exc.why}"))


def _check_import_header(doc: SourceDocument, mtype: MemberType, text: str, errors: list) -> None:
    """The CSV names at least one of the columns an import of the type matches records by."""
    try:
        header = next(csv.reader(io.StringIO(text.lstrip("\ufeff"))), [])
    except csv.Error as exc:
        errors.append(doc.error(("import",), f"{doc.data['import']}: the first line is not CSV: {exc}"))
        return
    if not {column.strip() for column in header} & set(mtype.match):
        errors.append(doc.error(("import",), f"{doc.data['import']}: the header needs one of the columns "
                                             f"{', '.join(mtype.match)} (type {mtype.name!r} matches by them)"))
