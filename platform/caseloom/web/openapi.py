"""An OpenAPI 3 document of the whole API, generated from the definitions (contract section 7).

Every route under /api/ is here (tests/test_openapi.py checks the app's url_map against it, and
runs schemathesis against the server). Tables, declared actions and member lists get operations
of their own, so that a request body can say which fields are mandatory and which choices its
class has, and a response can say what its rows really hold: a parent table's rows include its
child classes, so their choice values are allowed there too.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..definitions.model import ActionDef, Definitions, FieldDef, InputDef, TableDef
from ..fieldtypes import (
    DECIMAL_PRECISION,
    DECIMAL_SCALE,
    DURATION_MAX,
    EMAIL_LENGTH,
    INTEGER_MAX,
    INTEGER_MIN,
    PASSWORD_LENGTH,
    STRING_LENGTH,
    TEXT_LENGTH,
    URL_LENGTH,
)
from ..query import OPERATORS
from ..query.compile import MAX_OFFSET

SYS_ID = "^[0-9a-f]{32}$"
DATETIME = ("^([0-9]{3}[1-9]|[0-9]{2}[1-9][0-9]|[0-9][1-9][0-9]{2}|[1-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
            "[ T]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]$")  # YYYY-MM-DD HH:MM:SS, years 1 to 9999


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _any_of(*schemas: dict, description: str = "") -> dict:
    out: dict = {"anyOf": list(schemas)}
    return out | ({"description": description} if description else {})


# -- errors ------------------------------------------------------------------------------------

# status -> (component name, description); every error has the Error schema.
ERRORS = {
    "400": ("BadRequest", "Bad input: the message names the field or parameter"),
    "401": ("Unauthorized", "No credentials, or wrong ones"),
    "403": ("Forbidden", "Not allowed for the user's roles (or a browser session without its CSRF token)"),
    "404": ("NotFound", "No such record"),
    "405": ("MethodNotAllowed", "The path names another route (e.g. an id that is not a whole number)"),
    "409": ("Conflict", "The record's state does not allow it, or the change would lose data; the message says why"),
    "413": ("PayloadTooLarge", "The request body is larger than the server accepts"),
    "415": ("UnsupportedMediaType", "An attachment's content type is not allowed (caseloom.attachment.content_types), "
                                    "or a body is not of the type the operation takes"),
    "422": ("Unprocessable", "A rule, an effect, a script or a definition failed; nothing was changed"),
    "429": ("TooManyRequests", "Too many failed sign-ins, or the user's script CPU budget is spent: wait Retry-After seconds"),
}
READ = ("400", "401", "403", "429")
WRITE = ("400", "401", "403", "409", "413", "422", "429")


def _error_responses() -> dict:
    headers = {"401": {"WWW-Authenticate": {"schema": {"type": "string"}}},
               "429": {"Retry-After": {"schema": {"type": "integer"}}}}
    return {name: {"description": text, "content": {"application/json": {"schema": _ref("Error")}}}
            | ({"headers": headers[code]} if code in headers else {}) for code, (name, text) in ERRORS.items()}


def _responses(ok: dict[str, dict], errors: Iterable[str]) -> dict:
    out = dict(ok)
    for code in sorted(set(errors)):
        out[code] = {"$ref": f"#/components/responses/{ERRORS[code][0]}"}
    return out


def _json(schema: dict, description: str = "OK", **extra) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}, **extra}


def _result(schema: dict, **properties: dict) -> dict:
    return {"type": "object", "required": ["result"], "properties": {"result": schema, **properties}}


def _operation(summary: str, tags: list[str], responses: dict, *, parameters: list | None = None,
               body: dict | None = None, operation_id: str | None = None) -> dict:
    op: dict = {"summary": summary, "tags": tags}
    if operation_id:
        op["operationId"] = operation_id
    if parameters:
        op["parameters"] = parameters
    if body:
        op["requestBody"] = body
    op["responses"] = responses
    return op


def _path_param(name: str, schema: dict, description: str = "") -> dict:
    return {"name": name, "in": "path", "required": True, "schema": schema} | (
        {"description": description} if description else {})


SYS_ID_PARAM = _path_param("sys_id", {"type": "string", "pattern": SYS_ID}, "The record's sys_id (32 hex characters)")


# -- values a client sends ---------------------------------------------------------------------

def _text(limit: int | None) -> dict:
    text = {"type": "string"} | ({"maxLength": limit} if limit else {})
    return _any_of(text, {"type": "number"}, {"type": "boolean"})


# Field type -> the JSON a client may send for it. Strings as ServiceNow clients send them,
# or the native JSON value; "" (or null) clears a field.
INPUT = {
    "string": lambda f: _text(f.max_length or STRING_LENGTH),
    "text": lambda f: _text(f.max_length or TEXT_LENGTH),
    "password": lambda f: {"type": "string", "maxLength": f.max_length or PASSWORD_LENGTH},
    "journal": lambda f: {"type": "string", "maxLength": f.max_length or TEXT_LENGTH, "description": "Adds a journal entry"},
    "email": lambda f: _any_of({"type": "string", "format": "email", "maxLength": f.max_length or EMAIL_LENGTH},
                                     {"type": "string", "enum": [""]}),
    "url": lambda f: {"type": "string", "pattern": "^(https?://.*)?$", "maxLength": f.max_length or URL_LENGTH},
    "integer": lambda f: _any_of({"type": "integer", "minimum": INTEGER_MIN, "maximum": INTEGER_MAX},
                                       {"type": "string", "pattern": "^ *(-?[0-9]{1,9})? *$"}),
    "duration": lambda f: _any_of({"type": "integer", "minimum": 0, "maximum": DURATION_MAX},
                                  {"type": "string", "maxLength": 100},
                                  description="Seconds, or words such as '8h 30m' or '2 days'"),
    "decimal": lambda f: _any_of(
        {"type": "number", "exclusiveMinimum": True, "minimum": -10 ** (DECIMAL_PRECISION - DECIMAL_SCALE),
         "exclusiveMaximum": True, "maximum": 10 ** (DECIMAL_PRECISION - DECIMAL_SCALE)},
        {"type": "string", "pattern": f"^(-?[0-9]{{1,{DECIMAL_PRECISION - DECIMAL_SCALE}}}(\\.[0-9]+)?)?$"}),
    "boolean": lambda f: _any_of({"type": "boolean"},
                                       {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no", "on", "off", ""]}),
    "date": lambda f: _any_of({"type": "string", "format": "date"}, {"type": "string", "enum": [""]}),
    "datetime": lambda f: _any_of({"type": "string", "pattern": DATETIME}, {"type": "string", "enum": [""]},
                                        description="YYYY-MM-DD HH:MM:SS (UTC)"),
    "reference": lambda f: _any_of(
        {"type": "string", "pattern": "^([0-9a-f]{32})?$"},
        {"type": "object", "required": ["value"], "properties": {"value": {"type": "string", "pattern": SYS_ID}}},
        description=f"A sys_id of {f.reference}, or the reference as the API returns it"),
}


def _enum(field: FieldDef, values: Iterable, empty: bool) -> dict:
    """Choice values as strings (and as numbers, for numeric choices); "" clears the field."""
    values = list(values)
    schema = {"type": "string", "enum": [str(v) for v in values] + ([""] if empty else [])}
    if field.choice_kind == "integer" and all(isinstance(v, int) for v in values):
        schema = _any_of(schema, {"type": "integer", "enum": values})
    return schema


def _input_value(field: FieldDef, mandatory: bool = False) -> dict:
    if field.choices:
        schema = _enum(field, (v for v, _ in field.choices), empty=not mandatory)
    else:
        schema = INPUT.get(field.type, lambda f: {"type": "string"})(field)
    hidden = {"writeOnly": True} if field.ftype.hidden else {}  # sent, never read back
    return {**schema, **hidden, "description": _describe(field, schema)}


def _describe(field: FieldDef, schema: dict) -> str:
    text = field.label + (f": {field.description}" if field.description else "")
    if field.choices:
        text += " (" + ", ".join(f"{v} {label}" for v, label in field.choices) + ")"
    return text + (f"; {schema['description']}" if schema.get("description") else "")


def _read_only(field: FieldDef) -> bool:
    """Read-only in requests: sys fields are the platform's to set, but a create may name its sys_id."""
    return (field.read_only or field.system) and field.name != "sys_id"


def _request_schema(table: TableDef, create: bool) -> dict:
    """A create (mandatory fields required) or update (nothing required) body of one table."""
    properties: dict = {}
    for name, field in table.fields.items():
        schema = _input_value(field, mandatory=create and field.mandatory)
        if create and field.create_values:  # read-only, but a new record may take these
            schema = _enum(field, field.create_values, empty=True) | {
                "description": f"{field.label}: a new record may take {', '.join(map(str, field.create_values))}"}
        elif _read_only(field) or (name == "sys_id" and not create):
            schema["readOnly"] = True
        elif name == "sys_id":
            schema = {"type": "string", "pattern": SYS_ID, "description": "A new record's sys_id; generated when omitted"}
        properties[name] = schema
    required = [n for n, f in table.fields.items()
                if create and f.mandatory and not f.has_default and not _read_only(f) and not f.system]
    out = {"type": "object", "description": f"{'A new' if create else 'Changes to a'} {table.label} record",
           "properties": properties, "additionalProperties": False}
    return out | ({"required": required} if required else {})


# -- values the server answers -----------------------------------------------------------------

# Field type -> the string the Table API renders for it ("" when empty).
OUTPUT = {
    "boolean": {"type": "string", "enum": ["true", "false", ""]},
    "integer": {"type": "string", "pattern": "^(-?[0-9]+)?$"},
    "duration": {"type": "string", "pattern": "^([0-9]+)?$", "description": "seconds"},
    "decimal": {"type": "string", "pattern": r"^(-?[0-9]+(\.[0-9]+)?)?$"},
    "date": {"type": "string", "pattern": "^([0-9]{4}-[0-9]{2}-[0-9]{2})?$"},
    "datetime": {"type": "string", "pattern": "^([0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2})?$"},
    "journal": {"type": "string", "enum": [""], "description": "Journal fields read as \"\"; entries live in sys_journal_field"},
}


def _output_value(defs: Definitions, table: TableDef, field: FieldDef) -> dict:
    """One field as the Table API renders it, in every sysparm_display_value mode. The rows of
    a table include its child classes, so a choice allows every class's values."""
    if field.type == "reference":
        return _any_of({"type": "string"}, _ref("Reference"), _ref("ReferenceDisplay"),
                             description=f"{field.label} (reference to {field.reference})")
    value = OUTPUT.get(field.type, {"type": "string"})
    shown = {"type": "string"}
    if field.name == "sys_id":
        value = shown = {"type": "string", "pattern": SYS_ID}
    elif field.choices:  # each row shows its own class's labels
        classes = [f for cls in defs.descendants(table.name) if (f := defs.tables[cls].field(field.name)) is not None]
        values = {str(v) for f in classes for v, _ in f.choices} | {""}
        value = {"type": "string", "enum": sorted(values)}
        shown = {"type": "string", "enum": sorted(values | {label for f in classes for _, label in f.choices})}
    elif field.type in OUTPUT and field.ftype.words is None:  # a fixed shape: the display value is the value
        shown = value
    display = {"type": "object", "required": ["display_value", "value"], "additionalProperties": False,
               "properties": {"display_value": shown, "value": value}}
    return _any_of(shown, display, description=_describe(field, {}))


def _record_schema(defs: Definitions, table: TableDef) -> dict:
    properties = {}
    for name, field in table.fields.items():
        if field.ftype.hidden:
            continue  # never read back
        schema = _output_value(defs, table, field)
        if field.read_only or field.system:
            schema["readOnly"] = True
        properties[name] = schema
    return {"type": "object", "description": table.description or table.label, "properties": properties,
            "additionalProperties": _ref("AnyValue")}  # dot-walked sysparm_fields such as account.name


# -- the Table API ------------------------------------------------------------------------------

def _record_links(defs: Definitions, table: TableDef) -> dict:
    """From a created record to what takes its sys_id: the record, its actions and its member lists
    (OpenAPI links, which stateful clients such as schemathesis follow)."""
    targets = [f"{table.name}.{op}" for op in ("get", "put", "patch", "delete")]
    targets += [f"{table.name}.{a.name}" for a in defs.actions_for(table.name)]
    targets += [f"{m.name}.{op}" for m in defs.member_lists.values() if m.table == table.name
                for op in ("import", "preview", "template")]
    return {target.replace(".", "_"): {"operationId": target, "parameters": {"sys_id": "$response.body#/result/sys_id"}}
            for target in targets}


def _table_paths(defs: Definitions, table: TableDef) -> dict:
    name, tag = table.name, [table.label]
    record = _ref(name)
    shape = [{"$ref": f"#/components/parameters/{p}"} for p in
             ("sysparm_fields", "sysparm_display_value", "sysparm_exclude_reference_link")]
    writing = [*shape, {"$ref": "#/components/parameters/sysparm_input_display_value"}]
    listing = [{"$ref": f"#/components/parameters/{p}"} for p in
               ("sysparm_query", "sysparm_limit", "sysparm_offset", "sysparm_suppress_pagination_header",
                "sysparm_no_count")]
    body = {n: {"required": True, "content": {"application/json": {"schema": _ref(f"{name}.{n}")}}}
            for n in ("create", "update")}
    one = _json(_result(record))
    many = _json(_result({"type": "array", "items": record}), headers={
        "X-Total-Count": {"schema": {"type": "integer", "minimum": 0},
                          "description": "How many records the query matches (exact unless the request sent "
                                         "`Prefer: count=estimated` and X-Total-Count-Estimated says true); "
                                         "always sent, except with sysparm_no_count=true"},
        "X-Total-Count-Estimated": {"schema": {"type": "string", "enum": ["true"]},
                                    "description": "X-Total-Count is the database's estimate: more than "
                                                   "caseloom.list.exact_count_limit records match"},
        "Link": {"schema": {"type": "string"}, "description": "first, prev, next and last pages (no last "
                                                              "from an estimated total)"}})
    created = _json(_result(record), "Created", headers={"Location": {"schema": {"type": "string"}}},
                    links=_record_links(defs, table))
    return {
        f"/api/now/table/{name}": {
            "get": _operation(f"List {table.label} records", tag, _responses({"200": many}, READ),
                              parameters=listing + shape, operation_id=f"{name}.list"),
            "post": _operation(f"Create a {table.label} record", tag, _responses({"201": created}, WRITE),
                               parameters=writing, body=body["create"], operation_id=f"{name}.create"),
        },
        f"/api/now/table/{name}/{{sys_id}}": {
            "get": _operation(f"One {table.label} record", tag, _responses({"200": one}, (*READ, "404")),
                              parameters=[SYS_ID_PARAM, *shape], operation_id=f"{name}.get"),
            "put": _operation(f"Update a {table.label} record", tag, _responses({"200": one}, (*WRITE, "404")),
                              parameters=[SYS_ID_PARAM, *writing], body=body["update"], operation_id=f"{name}.put"),
            "patch": _operation(f"Update a {table.label} record", tag, _responses({"200": one}, (*WRITE, "404")),
                                parameters=[SYS_ID_PARAM, *writing], body=body["update"],
                                operation_id=f"{name}.patch"),
            "delete": _operation(f"Delete a {table.label} record", tag,
                                 _responses({"204": {"description": "Deleted"}}, (*WRITE, "404")),
                                 parameters=[SYS_ID_PARAM], operation_id=f"{name}.delete"),
        },
    }


def _batch_paths() -> dict:
    op = _operation("Several Table API requests in one call, each run as the caller (ServiceNow's Batch API)",
                    ["Batch"], _responses({"200": _json(_ref("BatchResponse"))}, ("400", "401", "403", "413", "429")),
                    body={"required": True, "content": {"application/json": {"schema": _ref("BatchRequest")}}})
    return {"/api/now/batch": {"post": op | {"operationId": "batch"}},
            "/api/now/v1/batch": {"post": op | {"operationId": "batch.v1"}}}


# -- actions, jobs and member lists ---------------------------------------------------------------

# Input type (of a free input) -> the JSON a client may send for it.
FREE_INPUT = {
    "boolean": lambda i: INPUT["boolean"](None),
    "records": lambda i: _any_of(
        {"type": "array", "items": {"type": "string", "pattern": SYS_ID}},
        {"type": "string", "description": "sys_ids separated by commas"},
        description=f"Records of {i.table}" if i.table else ""),
}


def _action_input(table: TableDef, spec: InputDef) -> dict:
    field = table.field(spec.name) if spec.field else None
    if field is not None:
        schema = _input_value(field, mandatory=spec.mandatory)
    elif spec.choices:
        schema = {"type": "string", "enum": [str(v) for v, _ in spec.choices]}
    else:
        schema = FREE_INPUT.get(spec.type, lambda i: {"type": "string"})(spec)
    return {**schema, "description": spec.label}


def _action_operation(table: TableDef, action: ActionDef) -> dict:
    inputs = {"type": "object", "additionalProperties": False,
              "properties": {i.name: _action_input(table, i) for i in action.inputs}}
    required = [i.name for i in action.inputs if i.mandatory]
    if required:
        inputs["required"] = required
    ok = {"200": _json(_result(_ref(table.name), message={"type": "string"}, details={"type": "object"}),
                       "Done: the record after")}
    if action.background:
        ok["202"] = _json(_result(_ref("JobStarted"), message={"type": "string"}), "Started in the background",
                          links={"job": {"operationId": "job", "parameters": {"id": "$response.body#/result/job"}}})
    roles = f" (roles: {', '.join(action.roles)})" if action.roles else ""
    summary = f"{action.label}{roles}" + (f": {action.refusal}" if action.refusal else "")
    return _operation(summary, [table.label], _responses(ok, (*WRITE, "404")), parameters=[SYS_ID_PARAM],
                      operation_id=f"{table.name}.{action.name}",
                      body={"required": bool(required), "content": {"application/json": {"schema": inputs}}})


def _action_paths(defs: Definitions, table: TableDef) -> dict:
    return {f"/api/caseloom/actions/{table.name}/{{sys_id}}/{action.name}": {"post": _action_operation(table, action)}
            for action in defs.actions_for(table.name)}


def _job_paths() -> dict:
    job_id = _path_param("id", {"type": "string"}, "The job id a 202 answer gave")
    undo = _result(_ref("JobUndo"))
    return {
        "/api/caseloom/jobs/{id}": {"get": _operation(
            "A background job's progress", ["Jobs"],
            _responses({"200": _json(_result(_ref("Job")))}, ("401", "403", "404", "429")),
            parameters=[job_id], operation_id="job")},
        "/api/caseloom/status": {"get": _operation(
            "What the deployment is doing now, for administrators (the System status page; `caseloom status --json`): "
            "the health checks of /health, the job workers, the jobs queued and running and the last to end, the "
            "e-mail by state. 200 also when a part is down: `status` says so", ["Jobs"],
            _responses({"200": _json(_result(_ref("SystemStatus")))}, ("401", "403", "429")),
            operation_id="status")},
        "/api/caseloom/jobs/{id}/cancel": {"post": _operation(
            "Stop a queued or running job at its next unit of work (who started it, an administrator, or who may "
            "run its action now); 409 when it has finished", ["Jobs"],
            _responses({"200": _json(_result(_ref("Job")), "The job, stopped (state failed, message 'stopped by …')")},
                       ("401", "403", "404", "409", "429")),
            parameters=[job_id], operation_id="job.cancel")},
        "/api/caseloom/jobs/{id}/undo": {
            "get": _operation(
                "What undoing the records the job created would do now, or why it cannot (`refusal`); nothing is "
                "written", ["Jobs"], _responses({"200": _json(undo)}, ("401", "403", "404", "429")),
                parameters=[job_id], operation_id="job.undo_plan"),
            "post": _operation(
                "Remove the records the job created that nobody has touched, cancel their unsent e-mails, audited, in "
                "one transaction (needs delete access to them); 409 when it runs or nothing is left to undo", ["Jobs"],
                _responses({"200": _json(undo, "What was done")}, ("401", "403", "404", "409", "429")),
                parameters=[job_id], operation_id="job.undo")},
    }


def _member_list_paths(defs: Definitions) -> dict:
    """The routes of every member list, under its own name: /api/caseloom/{member list}/{sys_id}/..."""
    paths = {}
    for mdef in defs.member_lists.values():
        label = defs.tables[mdef.table].label
        base, tag = f"/api/caseloom/{mdef.name}/{{sys_id}}", [label]
        sys_id = _path_param("sys_id", SYS_ID_PARAM["schema"], f"The sys_id of a {mdef.table} record (a {label})")
        columns = "; ".join(f"{t.name} ({t.table}): {', '.join(t.match)}" for t in mdef.types.values())
        csv = {"required": True, "content": {"text/csv": {"schema": {"type": "string"}}},
               "description": f"A header row naming one of the columns the list's type matches records by "
                              f"({columns}), then one record a row"}
        paths[f"{base}/import"] = {"post": _operation(
            f"Add members to a {label} from a CSV", tag,
            _responses({"200": _json(_result(_ref("ImportReport")))}, (*WRITE, "404")), parameters=[sys_id],
            body=csv, operation_id=f"{mdef.name}.import")}
        paths[f"{base}/preview"] = {"get": _operation(
            f"How many records a {label}'s condition or script identifies now, with a sample; writes nothing", tag,
            _responses({"200": _json(_result(_ref("MemberPreview")))}, (*READ, "404", "409", "422")),
            parameters=[sys_id], operation_id=f"{mdef.name}.preview")}
        paths[f"{base}/template"] = {"get": _operation(
            f"The CSV header an import into this {label} accepts (its type's columns: {columns})", tag,
            _responses({"200": {"description": "CSV", "content": {"text/csv": {"schema": {"type": "string"}}}}},
                       (*READ, "404")), parameters=[sys_id], operation_id=f"{mdef.name}.template")}
    return paths


# -- definitions and this document -----------------------------------------------------------------

def _definition_paths() -> dict:
    path = _path_param("path", {"type": "string", "pattern": r"^[A-Za-z0-9_./-]+\.(yaml|yml|csv)$"},
                       "A file under the definitions folder, e.g. tables/task.yaml")
    force = {"name": "force", "in": "query", "schema": {"type": "boolean"},
             "description": "true: accept a change that loses data"}
    change = _json(_result(_ref("DefinitionChange")))
    tag = ["Definitions"]
    admin = ("401", "403", "429")
    return {
        "/api/caseloom/definitions": {"get": _operation(
            "Every definition file with its path and version", tag,
            _responses({"200": _json(_result({"type": "array", "items": _ref("DefinitionFile")}))}, admin),
            operation_id="definitions.list")},
        "/api/caseloom/definitions/history": {"get": _operation(
            "Who changed which definition file, when", tag,
            _responses({"200": _json(_result({"type": "array", "items": _ref("DefinitionHistory")}))}, admin),
            operation_id="definitions.history")},
        "/api/caseloom/definitions/history/{id}/restore": {"post": _operation(
            "Restore a file to the text of a history entry", tag,
            _responses({"200": change}, (*admin, "404", "405", "409", "422")),
            parameters=[_path_param("id", {"type": "integer", "minimum": 0, "maximum": INTEGER_MAX}), force],
            operation_id="definitions.restore")},
        "/api/caseloom/definitions/{path}": {
            "get": _operation("The YAML text of a file", tag, _responses(
                {"200": {"description": "YAML", "content": {"application/yaml": {"schema": {"type": "string"}}}}},
                (*admin, "400", "404")), parameters=[path], operation_id="definitions.get"),
            "put": _operation(
                "Add or replace a file: validated as a whole set, the schema migrated, used from the next request",
                tag, _responses({"200": change}, (*admin, "400", "409", "413", "422")), parameters=[path, force],
                body={"required": True, "content": {"application/yaml": {"schema": {"type": "string"}}}},
                operation_id="definitions.put"),
            "delete": _operation("Remove a file", tag, _responses({"200": change}, (*admin, "400", "404", "409", "422")),
                                 parameters=[path, force], operation_id="definitions.delete"),
        },
    }


def _attachment_paths() -> dict:
    """ServiceNow's Attachment API: access follows the record a file belongs to."""
    one = _json(_result(_ref("Attachment")))
    query = {"in": "query", "required": True}
    upload = [query | {"name": "table_name", "schema": {"type": "string"}, "description": "The record's table"},
              query | {"name": "table_sys_id", "schema": {"type": "string"}, "description": "The record's sys_id"},
              query | {"name": "file_name", "schema": {"type": "string"}, "description": "The file's name"}]
    tag = ["Attachments"]
    shape = [{"$ref": f"#/components/parameters/{p}"} for p in ("sysparm_fields", "sysparm_display_value")]
    return {
        "/api/now/attachment/file": {"post": _operation(
            "Attach the request body to a record the user may write (size and type as the caseloom.attachment "
            "properties allow)", tag,
            _responses({"201": one | {"description": "Attached"}}, ("400", "401", "403", "404", "413", "415", "429")),
            parameters=upload, operation_id="attachment.upload",
            body={"required": True, "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}})},
        "/api/now/attachment": {"get": _operation(
            "Attachments of records the user may read", tag,
            _responses({"200": _json(_result({"type": "array", "items": _ref("Attachment")}),
                                     headers={"X-Total-Count": {"schema": {"type": "integer"}}})}, READ),
            parameters=[{"$ref": "#/components/parameters/sysparm_query"},
                        {"$ref": "#/components/parameters/sysparm_limit"},
                        {"$ref": "#/components/parameters/sysparm_offset"}, *shape], operation_id="attachment.list")},
        "/api/now/attachment/{sys_id}": {
            "get": _operation("An attachment's metadata", tag, _responses({"200": one}, (*READ, "404")),
                              parameters=[SYS_ID_PARAM, *shape], operation_id="attachment.get"),
            "delete": _operation("Delete an attachment of a record the user may write", tag,
                                 _responses({"204": {"description": "Deleted"}}, (*READ, "404")),
                                 parameters=[SYS_ID_PARAM], operation_id="attachment.delete")},
        "/api/now/attachment/{sys_id}/file": {"get": _operation(
            "The file, as a download", tag,
            _responses({"200": {"description": "The file's bytes, in its content type", "content": {
                "*/*": {"schema": {"type": "string", "format": "binary"}}}}}, (*READ, "404")),
            parameters=[SYS_ID_PARAM], operation_id="attachment.file")},
    }


def _email_paths() -> dict:
    """E-mail in: a raw message handed over by a mail server or gateway."""
    outcome = {"type": "object", "required": ["action", "table", "sys_id", "reason", "email"], "properties": {
        "action": {"type": "string", "enum": ["created", "commented", "ignored"]},
        "table": {"type": "string", "description": "The table of the record created or commented on ('' if none)"},
        "sys_id": {"type": "string", "description": "That record's sys_id ('' if none)"},
        "reason": {"type": "string", "description": "Why it was ignored, or what else happened ('' if nothing)"},
        "email": {"type": "string", "description": "The sys_email row the message is kept as"}}}
    return {"/api/caseloom/email/inbound": {"post": _operation(
        "Act on a received e-mail (the raw RFC 822 message as the body): a new record, a comment on the record it "
        "answers, or ignored with the reason; kept in sys_email. Needs create access to sys_email", ["E-mail"],
        _responses({"200": _json(_result(outcome))}, ("400", "401", "403", "413", "415", "429")),
        operation_id="email.inbound",
        body={"required": True, "content": {"message/rfc822": {"schema": {"type": "string", "format": "binary"}}}})}}


def _event_paths() -> dict:
    """Events in (ServiceNow's Event Management web service)."""
    text = {"type": "string"}
    event = {"type": "object", "required": ["source", "node", "severity"], "additionalProperties": False,
             "properties": {
                 **{name: text for name in ("source", "event_class", "node", "type", "resource", "metric_name",
                                            "message_key", "description")},
                 "severity": {"oneOf": [{"type": "string", "enum": ["0", "1", "2", "3", "4", "5"]},
                                        {"type": "integer", "minimum": 0, "maximum": 5}],
                              "description": "0 Clear, 1 Critical, 2 Major, 3 Minor, 4 Warning, 5 OK"},
                 "additional_info": {"oneOf": [text, {"type": "object"}], "description": "extra values, a JSON object"},
                 "time_of_event": {"type": "string", "description": "yyyy-MM-dd HH:mm:ss, UTC"}}}
    error = _object(("index", "reason"), index=INTEGER, reason=STRING)
    outcome = _object(("Default Bulk Endpoint", "inserted", "alerts_opened", "alerts_updated", "ignored", "errors"),
                      **{"Default Bulk Endpoint": STRING}, inserted=INTEGER, alerts_opened=INTEGER,
                      alerts_updated=INTEGER, ignored=INTEGER, errors={"type": "array", "items": error})
    body = {"type": "object", "required": ["records"], "properties": {"records": {"type": "array", "items": event}}}
    return {"/api/global/em/jsonv2": {"post": _operation(
        "Send monitoring events: each is checked on its own (a bad one listed by its index and reason, the good ones "
        "kept) and folded into the alert of its message key (em_alert). Needs create access to em_event", ["Events"],
        _responses({"200": _json(_result(outcome))}, ("400", "401", "403", "413", "415", "429")),
        operation_id="events.jsonv2",
        body={"required": True, "content": {"application/json": {"schema": body}}})}}


def _stats_paths(defs: Definitions) -> dict:
    """ServiceNow's Aggregate API, one path for every table (the table a path parameter)."""
    numbers = {"type": "object", "additionalProperties": STRING, "description": "field -> the value, as a string"}
    stats = {"type": "object", "properties": {
        "count": STRING, **{name: numbers for name in ("avg", "min", "max", "sum")}}}
    group = _object(("field", "value", "display_value"), field=STRING, value=STRING, display_value=STRING)
    grouped = _object(("stats", "groupby_fields"), stats=stats, groupby_fields={"type": "array", "items": group})
    query = {"in": "query"}
    text = {"type": "string", "maxLength": 4000}
    parameters = [
        _path_param("table", {"type": "string", "enum": sorted(defs.tables)}, "The table"),
        {"$ref": "#/components/parameters/sysparm_query"},
        {"$ref": "#/components/parameters/sysparm_display_value"},
        query | {"name": "sysparm_count", "schema": {"type": "boolean"}, "description": "true: count the records"},
        *(query | {"name": f"sysparm_{fn}_fields", "schema": text,
                   "description": f"Comma-separated fields to {fn} ({'numbers' if fn in ('avg', 'sum') else 'any'})"}
          for fn in ("avg", "min", "max", "sum")),
        query | {"name": "sysparm_group_by", "schema": text, "description": "Comma-separated fields; dot-walks allowed"},
        query | {"name": "sysparm_having", "schema": text,
                 "description": "Comma-separated aggregate^field^operator^value, as count^priority^>^3"},
        query | {"name": "sysparm_orderby", "schema": text,
                 "description": "Comma-separated grouped fields or AGGREGATE^field, each optionally ^DESC"},
    ]
    return {"/api/now/stats/{table}": {"get": _operation(
        "Counts, averages, sums, minimums and maximums of the records the user may read, grouped or not "
        "(ServiceNow's Aggregate API)", ["Aggregate"],
        _responses({"200": _json(_result(_any_of(_object(("stats",), stats=stats),
                                                 {"type": "array", "items": grouped})))}, (*READ, "404")),
        parameters=parameters, operation_id="stats")}}


def _report_paths(defs: Definitions) -> dict:
    """A declared report's numbers (definitions kind `reports`)."""
    from ..insight import RANGES

    cell = _object(("value", "display_value", "query"), value=STRING, display_value=STRING, query=STRING)
    value = _object(("value", "display_value"), value=STRING, display_value=STRING)
    group = {"type": "object", "required": ["group"], "properties": {
        "group": value, **cell["properties"], "series": {"type": "array", "items": cell | {
            "required": ["group", "value", "display_value", "query"],
            "properties": {"group": value, **cell["properties"]}}}}}
    result = _object(("name", "title", "type", "table", "measure", "range", "query"), name=STRING, title=STRING,
                     type=STRING, table=STRING, measure=STRING, range=STRING, query=STRING, score=cell,
                     previous=cell | {"nullable": True}, groups={"type": "array", "items": group})
    names = {"type": "string", "enum": sorted(defs.reports)} if defs.reports else STRING
    parameters = [_path_param("name", names, "A declared report"),
                  {"in": "query", "name": "range", "schema": {"type": "string", "enum": list(RANGES)},
                   "description": "The last 7, 30, 90 or 365 days, or all (default 30)"}]
    return {"/api/caseloom/report/{name}": {"get": _operation(
        "A declared report's numbers for this user, each with its display value and the encoded query of its "
        "records", ["Reports"], _responses({"200": _json(_result(result))}, (*READ, "404")),
        parameters=parameters, operation_id="report")}}


def _similar_paths(defs: Definitions) -> dict:
    """The records most like one (caseloom.similar), on every table with a text index."""
    indexed = sorted(t.name for t in defs.tables.values() if t.text_index)
    lists = sorted({s.name for t in defs.tables.values() for s in t.similar})
    query = {"in": "query"}
    item = {"type": "object", "required": ["sys_id", "number", "score"], "additionalProperties": True, "properties": {
        "sys_id": STRING, "number": STRING,
        "score": {"type": "number", "minimum": 0, "maximum": 1, "description": "0 to 1 against the record itself"}}}
    parameters = [
        _path_param("table", {"type": "string", "enum": indexed} if indexed else STRING, "A table with a text index"),
        _path_param("sys_id", {"type": "string", "maxLength": 32}, "The record whose similar records are wanted"),
        query | {"name": "sysparm_list", "schema": {"type": "string", "enum": lists} if lists else STRING,
                 "description": "One of the table's similar lists: its condition, minimum score and limit"},
        {"$ref": "#/components/parameters/sysparm_query"},
        query | {"name": "sysparm_min_score", "schema": {"type": "number", "minimum": 0, "maximum": 1},
                 "description": "The lowest score (default: the list's, else 0)"},
        query | {"name": "sysparm_limit", "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                 "description": "How many, best first (default: the list's, else 10)"},
        {"$ref": "#/components/parameters/sysparm_fields"},
        {"$ref": "#/components/parameters/sysparm_display_value"},
    ]
    return {"/api/caseloom/similar/{table}/{sys_id}": {"get": _operation(
        "The records most like one, best first, each with a score from 0 to 1 against the record itself",
        ["Similar"], _responses({"200": _json(_result({"type": "array", "items": item}))}, (*READ, "404")),
        parameters=parameters, operation_id="similar")}}


def _sla_repair_paths(defs: Definitions) -> dict:
    """SLA repair (caseloom.timing.repair) on every table whose records can have SLAs."""
    from ..jobs.slarepair import IN_A_REQUEST
    from ..timing.slas import enabled

    tables = sorted(t.name for t in defs.tables.values() if enabled(defs, t.name) and t.audit)
    if not tables:
        return {}
    done = _object(("records", "removed", "created", "log"), records=INTEGER, removed=INTEGER, created=INTEGER,
                   log=STRING)  # log: the repair's sla_repair_log record
    parameters = [_path_param("table", {"type": "string", "enum": tables}, "A table whose records have SLAs"),
                  {"$ref": "#/components/parameters/sysparm_query"}]
    return {"/api/caseloom/slas/repair/{table}": {"post": _operation(
        f"Repair SLAs (administrators): the task SLAs of the records matching sysparm_query (all when none is "
        f"given) deleted and made again from each record's history; above {IN_A_REQUEST:,} records, by a "
        f"background job (202)", ["SLAs"],
        _responses({"200": _json(_result(done, message=STRING)),
                    "202": _json(_result(_object(("job", "log"), job=STRING, log=STRING), message=STRING))},
                   (*WRITE, "404")),
        parameters=parameters, operation_id="slas.repair")}}


def _document_paths() -> dict:
    return {"/api/caseloom/openapi.json": {"get": _operation(
        "This document", ["Caseloom"], _responses({"200": _json({"type": "object"})}, ("401", "429")),
        operation_id="openapi")}}


# -- components ---------------------------------------------------------------------------------

def _parameters() -> dict:
    operators = ", ".join(f"{op.token} ({op.label})" for op in OPERATORS.values() if op.change is None)
    query = {"in": "query"}
    return {
        "sysparm_query": query | {"name": "sysparm_query", "schema": {"type": "string"}, "description":
                                  f"Encoded query; ^ AND, ^OR, ^NQ, ORDERBY/ORDERBYDESC; operators: {operators}; "
                                  f"ranges: BETWEENstart@end, ONlabel@start@end, NOTONlabel@start@end"},
        "sysparm_limit": query | {"name": "sysparm_limit", "schema": {"type": "integer", "minimum": 1},
                                  "description": "At most this many records (larger values are capped at 10000)"},
        "sysparm_offset": query | {"name": "sysparm_offset", "schema": {"type": "integer", "minimum": 0,
                                                                        "maximum": MAX_OFFSET}},
        "sysparm_fields": query | {"name": "sysparm_fields", "schema": {"type": "string"},
                                   "description": "Comma-separated fields; dot-walk with a.b"},
        "sysparm_display_value": query | {"name": "sysparm_display_value",
                                          "schema": {"type": "string", "enum": ["false", "true", "all"]},
                                          "description": "true: display values; all: {display_value, value}"},
        "sysparm_exclude_reference_link": query | {"name": "sysparm_exclude_reference_link",
                                                   "schema": {"type": "boolean"},
                                                   "description": "true: references as plain sys_ids"},
        "sysparm_no_count": query | {"name": "sysparm_no_count", "schema": {"type": "boolean"},
                                     "description": "true: the matches are not counted (no X-Total-Count; Link "
                                                    "has next while a page is full, no last)"},
        "sysparm_input_display_value": query | {"name": "sysparm_input_display_value", "schema": {"type": "boolean"},
                                                "description": "true: the body's values are display values (a "
                                                               "choice's label, a referenced record's name)"},
        "sysparm_suppress_pagination_header": query | {"name": "sysparm_suppress_pagination_header",
                                                       "schema": {"type": "boolean"}, "description": "true: no Link header"},
    }


def _object(required: Iterable[str], **properties: dict) -> dict:
    return {"type": "object", "required": list(required), "properties": properties}


STRING, INTEGER = {"type": "string"}, {"type": "integer"}
STAMP = {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$"}
HEADERS = {"type": "array", "items": _object(  # HTTP's own rules: a token, then visible text
    ("name", "value"), name={"type": "string", "pattern": "^[-!#$%&'*+.^_`|~0-9A-Za-z]+$"},
    value={"type": "string", "pattern": "^[\\t\\x20-\\x7e]*$"})}


def _shared_schemas() -> dict:
    return {
        "Error": _object(("error", "status"), error=_object(("message", "detail"), message=STRING, detail={}),
                         status={"type": "string", "enum": ["failure"]}),
        "AnyValue": _any_of(STRING, _ref("Reference"), _ref("ReferenceDisplay"), _ref("DisplayValue")),
        "Reference": _object(("link", "value"), link=STRING, value={"type": "string", "pattern": SYS_ID})
        | {"additionalProperties": False},
        "ReferenceDisplay": _object(("display_value", "value"), display_value=STRING, link=STRING,
                                    value={"type": "string", "pattern": "^([0-9a-f]{32})?$"})
        | {"additionalProperties": False},
        "DisplayValue": _object(("display_value", "value"), display_value=STRING, value=STRING)
        | {"additionalProperties": False},
        "JobStarted": _object(("job",), job=STRING),
        "Attachment": {"allOf": [_ref("sys_attachment"), _object(  # the fields as sysparm_fields asks; the link always
            ("download_link",), download_link={"type": "string", "description": "GET it for the file"})]},
        "JobUndo": {"type": "object", "properties": dict(
            job=STRING, done={"type": "boolean", "description": "true: done; false: what it would do"},
            created=INTEGER, removed=INTEGER, message=STRING,
            refusal={"type": "string", "nullable": True, "description": "why it cannot be undone (GET only)"},
            tables={"type": "array", "items": _object(
                ("table", "created", "removable", "touched"), table=STRING, label=STRING, created=INTEGER,
                removable=INTEGER, touched=INTEGER, gone=INTEGER, touched_names={"type": "array", "items": STRING},
                emails_waiting=INTEGER, emails_sent=INTEGER)})},
        "Job": _object(("state", "done", "total", "message"),
                       state={"type": "string", "enum": ["queued", "running", "done", "failed"],
                              "description": "a stopped job reads failed, its message saying who stopped it"},
                       done=INTEGER, total=INTEGER, message={"type": "string", "nullable": True}),
        "SystemStatus": _object(
            ("status", "health", "database", "jobs", "email", "problems"),
            status={"type": "string", "enum": ["ok", "down"]},
            health={"type": "object", "description": "What GET /health answers"},
            database=_object(("kind", "version"), kind=STRING, version={"type": "string", "nullable": True}),
            jobs=_object(("active", "ended"), active={"type": "array", "items": _ref("StatusJob")},
                         ended={"type": "array", "items": _ref("StatusJob")}),
            email={"type": "object", "nullable": True, "required": ["by_state", "waiting", "oldest_waiting_seconds",
                                                                    "sent_last_minute"], "properties": dict(
                by_state={"type": "object", "additionalProperties": INTEGER}, waiting=INTEGER,
                oldest_waiting_seconds={"type": "number", "nullable": True}, sent_last_minute=INTEGER)},
            problems={"type": "object", "additionalProperties": STRING,
                      "description": "a part that could not be read, by the kind of its error"}),
        "StatusJob": _object(
            ("id", "name", "state", "done", "total", "seconds"), id=STRING, name=STRING,
            state={"type": "string", "enum": ["queued", "running", "done", "failed", "canceled"]},
            done=INTEGER, total=INTEGER, message={"type": "string", "nullable": True},
            created_on={"type": "string", "format": "date-time"}, updated_on={"type": "string", "format": "date-time"},
            created_by={"type": "string", "nullable": True}, target_table={"type": "string", "nullable": True},
            target_sys_id={"type": "string", "nullable": True}, slice_of={"type": "string", "nullable": True},
            worker={"type": "string", "nullable": True, "description": "host:pid of the run, while it runs"},
            seconds={"type": "number", "description": "since it was queued, or from queued to its end"},
            heard_seconds={"type": "number", "nullable": True}, lost={"type": "string", "nullable": True}),
        "ImportReport": _object(("added", "rejected", "identified"), added=INTEGER, identified=INTEGER,
                                rejected_total={"type": "integer", "description": "rejected rows, of which a sample is listed"},
                                rejected={"type": "array", "items": _object(("row", "reason"), row=INTEGER, reason=STRING)}),
        "MemberPreview": _object(("source", "count", "sample", "members"),
                                 source={"type": "string", "enum": ["condition", "script", "import"]},
                                 count=INTEGER, members=INTEGER, rejected=INTEGER,
                                 log={"type": "array", "items": STRING},
                                 sample={"type": "array", "items": {"type": "object", "additionalProperties": STRING}}),
        "BatchRequest": _object(("rest_requests",), batch_request_id=STRING, rest_requests={
            "type": "array", "description": "At most CASELOOM_MAX_BATCH_REQUESTS (100) requests", "items": _object(
            ("id", "url"), id=_any_of(STRING, INTEGER), url={"type": "string", "pattern": "^/api/now/table/"},
            method={"type": "string", "enum": ["GET", "POST", "PUT", "PATCH", "DELETE"]}, headers=HEADERS,
            body={"type": "string", "format": "byte", "description": "The request body, base64"})}),
        "BatchResponse": _object(
            ("batch_request_id", "serviced_requests", "unserviced_requests"), batch_request_id=STRING,
            serviced_requests={"type": "array", "items": _object(
                ("id", "status_code", "status_text", "headers", "body", "execution_time"), id=STRING,
                status_code=INTEGER, status_text=STRING, headers=HEADERS, execution_time=INTEGER,
                body={"type": "string", "format": "byte", "description": "The response body, base64"})},
            unserviced_requests={"type": "array", "description": "ids of requests not run (null: an item without one)",
                                 "items": {"anyOf": [STRING, INTEGER], "nullable": True}}),
        "DefinitionFile": _object(("path", "version", "updated_on"), path=STRING, version=STRING, updated_on=STAMP,
                                  updated_by={"type": "string", "nullable": True}),
        "DefinitionHistory": _object(("id", "path", "action", "user", "created_on"), id=INTEGER, path=STRING,
                                     action=STRING, user={"type": "string", "nullable": True}, created_on=STAMP),
        "DefinitionChange": _object(("path", "action", "version", "schema_changes"), path=STRING, action=STRING,
                                    version={"type": "string", "nullable": True},
                                    schema_changes={"type": "array", "items": STRING},
                                    not_built={"type": "array", "items": STRING,
                                               "description": "new indexes the committed change could not build "
                                                              "yet (PostgreSQL: built by the next change)"}),
    }


def document(defs: Definitions, server: str) -> dict:
    """The OpenAPI 3 document of this definition set, served at GET /api/caseloom/openapi.json."""
    tables = sorted(defs.tables.values(), key=lambda t: t.name)
    paths: dict = {}
    for table in tables:
        paths.update(_table_paths(defs, table))
        paths.update(_action_paths(defs, table))
    for part in (_batch_paths(), _attachment_paths(), _email_paths(), _event_paths(), _stats_paths(defs), _report_paths(defs),
                 _similar_paths(defs), _member_list_paths(defs), _sla_repair_paths(defs), _job_paths(), _definition_paths(),
                 _document_paths()):
        paths.update(part)
    schemas = _shared_schemas()
    for table in tables:
        schemas[table.name] = _record_schema(defs, table)
        schemas[f"{table.name}.create"] = _request_schema(table, create=True)
        schemas[f"{table.name}.update"] = _request_schema(table, create=False)
    return {
        "openapi": "3.0.3",
        "info": {"title": "Caseloom API", "version": "1", "description": (
            "ServiceNow-compatible Table and Batch APIs, actions, background jobs, member lists and definitions, "
            "generated from the definitions. Values are strings as ServiceNow returns them; errors are "
            '{"error": {"message", "detail"}, "status": "failure"}.')},
        "servers": [{"url": server.rstrip("/")}],
        "security": [{"basic": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}},
            "parameters": _parameters(),
            "responses": _error_responses(),
            "schemas": schemas,
        },
    }
