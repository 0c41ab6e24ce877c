"""An OpenAPI 3 document of the API, generated from the definitions."""

from __future__ import annotations

from ..definitions.model import Definitions, TableDef
from ..query import OPERATORS

ERROR = {"$ref": "#/components/schemas/Error"}


def _record_schema(table: TableDef) -> dict:
    properties = {}
    for name, field in table.fields.items():
        if field.type == "password":
            continue
        schema: dict = {"type": "string", "description": field.label}
        if field.type == "reference":
            schema = {"oneOf": [{"type": "string"}, {"$ref": "#/components/schemas/Reference"}],
                      "description": f"{field.label} (reference to {field.reference})"}
        elif field.choices:
            schema["enum"] = [str(v) for v, _ in field.choices] + [""]
        if field.max_length and field.type in ("string", "email", "url"):
            schema["maxLength"] = field.max_length
        if field.read_only or field.system:
            schema["readOnly"] = True
        properties[name] = schema
    required = [n for n, f in table.fields.items() if f.mandatory]
    out = {"type": "object", "description": table.description or table.label, "properties": properties}
    return out | ({"required": required} if required else {})


def _responses(ok: str, schema: dict | None) -> dict:
    responses = {ok: {"description": "OK"}}
    if schema is not None:
        responses[ok]["content"] = {"application/json": {"schema": schema}}
    for code, text in (("400", "Bad input, naming the field"), ("401", "No credentials"),
                       ("403", "Not allowed for the user's roles"), ("404", "No such table or record")):
        responses[code] = {"description": text, "content": {"application/json": {"schema": ERROR}}}
    return responses


def _table_paths(table: TableDef) -> dict:
    ref = {"$ref": f"#/components/schemas/{table.name}"}
    one = {"type": "object", "properties": {"result": ref}}
    many = {"type": "object", "properties": {"result": {"type": "array", "items": ref}}}
    params = [{"$ref": f"#/components/parameters/{p}"} for p in
              ("sysparm_fields", "sysparm_display_value", "sysparm_exclude_reference_link")]
    sys_id = {"name": "sys_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}
    body = {"required": True, "content": {"application/json": {"schema": ref}}}
    tag = [table.label]
    return {
        f"/api/now/table/{table.name}": {
            "get": {"summary": f"List {table.label} records", "tags": tag, "responses": _responses("200", many),
                    "parameters": params + [{"$ref": f"#/components/parameters/{p}"} for p in
                                            ("sysparm_query", "sysparm_limit", "sysparm_offset")]},
            "post": {"summary": f"Create a {table.label} record", "tags": tag, "parameters": params,
                     "requestBody": body, "responses": _responses("201", one)},
        },
        f"/api/now/table/{table.name}/{{sys_id}}": {
            "get": {"summary": f"One {table.label} record", "tags": tag, "parameters": [sys_id, *params],
                    "responses": _responses("200", one)},
            "put": {"summary": f"Update a {table.label} record", "tags": tag, "parameters": [sys_id, *params],
                    "requestBody": body, "responses": _responses("200", one)},
            "patch": {"summary": f"Update a {table.label} record", "tags": tag, "parameters": [sys_id, *params],
                      "requestBody": body, "responses": _responses("200", one)},
            "delete": {"summary": f"Delete a {table.label} record", "tags": tag, "parameters": [sys_id],
                       "responses": _responses("204", None)},
        },
    }


def _definition_paths() -> dict:
    path = {"name": "path", "in": "path", "required": True, "schema": {"type": "string"}}
    yaml_body = {"required": True, "content": {"application/yaml": {"schema": {"type": "string"}}}}
    tag = ["Definitions"]
    return {
        "/api/caseloom/definitions": {"get": {"summary": "Every definition file with its path and version",
                                              "tags": tag, "responses": _responses("200", None)}},
        "/api/caseloom/definitions/history": {"get": {"summary": "Who changed which definition file, when",
                                                      "tags": tag, "responses": _responses("200", None)}},
        "/api/caseloom/definitions/history/{id}/restore": {"post": {
            "summary": "Restore a file to the text of a history entry", "tags": tag,
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
            "responses": _responses("200", None)}},
        "/api/caseloom/definitions/{path}": {
            "get": {"summary": "The YAML text of a file", "tags": tag, "parameters": [path],
                    "responses": _responses("200", None)},
            "put": {"summary": "Add or replace a file: validated, schema migrated, used from the next request",
                    "tags": tag, "parameters": [path], "requestBody": yaml_body,
                    "responses": _responses("200", None) | {"422": {"description": "Invalid: every error located"}}},
            "delete": {"summary": "Remove a file", "tags": tag, "parameters": [path],
                       "responses": _responses("200", None)},
        },
    }


def document(defs: Definitions, server: str) -> dict:
    paths: dict = {}
    for table in sorted(defs.tables.values(), key=lambda t: t.name):
        paths.update(_table_paths(table))
    paths.update(_definition_paths())
    operators = ", ".join(f"{op.token} ({op.label})" for op in OPERATORS.values())
    return {
        "openapi": "3.0.3",
        "info": {"title": "Caseloom API", "version": "1",
                 "description": "ServiceNow-compatible Table API generated from the definitions."},
        "servers": [{"url": server.rstrip("/")}],
        "security": [{"basic": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}},
            "parameters": {
                "sysparm_query": {"name": "sysparm_query", "in": "query", "schema": {"type": "string"},
                                  "description": f"Encoded query; ^ AND, ^OR, ^NQ, ORDERBY/ORDERBYDESC; operators: {operators}"},
                "sysparm_limit": {"name": "sysparm_limit", "in": "query", "schema": {"type": "integer", "maximum": 10000}},
                "sysparm_offset": {"name": "sysparm_offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                "sysparm_fields": {"name": "sysparm_fields", "in": "query", "schema": {"type": "string"},
                                   "description": "Comma-separated fields; dot-walk with a.b"},
                "sysparm_display_value": {"name": "sysparm_display_value", "in": "query",
                                          "schema": {"type": "string", "enum": ["false", "true", "all"]}},
                "sysparm_exclude_reference_link": {"name": "sysparm_exclude_reference_link", "in": "query",
                                                   "schema": {"type": "boolean"}},
            },
            "schemas": {
                "Error": {"type": "object", "properties": {
                    "error": {"type": "object", "properties": {"message": {"type": "string"}, "detail": {}}},
                    "status": {"type": "string", "enum": ["failure"]}}},
                "Reference": {"type": "object", "properties": {"link": {"type": "string"}, "value": {"type": "string"}}},
                **{t.name: _record_schema(t) for t in defs.tables.values()},
            },
        },
    }
