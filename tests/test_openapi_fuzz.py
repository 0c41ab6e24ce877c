"""Schemathesis against the API: every documented operation, as admin, on a throwaway database,
destructive ones on users and roles included, checked for server errors and answers the OpenAPI
document does not describe. Minutes long (marked slow): CI runs it, `pytest -m "not slow"` skips it.
Kept apart from test_openapi.py so the two files run side by side under `--dist loadfile`."""

from __future__ import annotations

import dataclasses
import os
import re

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi import checks

from caseloom.definitions import load_folder
from caseloom.web.openapi import document
from conftest import DEFINITIONS, basic

DEFS = load_folder(DEFINITIONS)
ADMIN = basic("admin")


# -- schemathesis against the server -----------------------------------------------------------------

# E-mail in takes a raw message (message/rfc822), which schemathesis cannot make from a schema: whole
# messages, known senders or not, and bytes that are not one at all
schemathesis.openapi.media_type("message/rfc822", st.one_of(
    st.sampled_from([b"From: contact1@example.com\r\nSubject: fuzz\r\n\r\nhello\r\n",
                     b"From: nobody@nowhere.example\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n\r\nhi\r\n",
                     b"From: MAILER-DAEMON@mx.example\r\nContent-Type: multipart/report; boundary=X\r\n\r\n--X--\r\n"]),
    st.binary(max_size=2000)))

FUZZ_EXAMPLES = int(os.environ.get("CASELOOM_FUZZ_EXAMPLES", "5"))  # fuzzed examples per operation and mode
FUZZ = SchemathesisConfig.from_dict({
    "generation": {"max-examples": FUZZ_EXAMPLES, "no-shrink": True},  # bounded: no shrinking
    "analysis": {"constants": {"enabled": False}},
})
FUZZED = schemathesis.openapi.from_dict(document(DEFS, "http://localhost/"), config=FUZZ)
CHECKS = [schemathesis.checks.not_a_server_error, checks.response_schema_conformance, checks.status_code_conformance,
          checks.content_type_conformance, checks.response_headers_conformance]
SPARED = "user_name=admin"  # a PATCH of the admin's own user or roles would lock the rest of a run out


@pytest.fixture
def fuzz_app(config, definitions, definitions_copy):
    """The app on a throwaway database and a copy of the definitions folder (definitions PUTs write
    to the folder), not in testing mode: a server error is a 500 answer, as in production."""
    from caseloom.web import create_app, db

    app = create_app(dataclasses.replace(config, definitions=str(definitions_copy)), definitions)
    yield app
    with app.app_context():
        db.engine.dispose()


def _target(path: str) -> str:
    """The table (or member list) whose sys_id a path takes."""
    parts = path.split("/")
    return parts[4] if path.startswith(("/api/now/table/", "/api/caseloom/actions/")) else parts[3]


def _records(app, table: str) -> list[str]:
    """Up to 50 sys_ids of a table (of a member list: of its lists), the admin's user and roles spared."""
    known = app.extensions.setdefault("fuzz_records", {})
    if table not in known:
        defs = app.extensions["caseloom"].defs
        table = defs.member_lists[table].table if table in defs.member_lists else table
        client = app.test_client()

        def ids(name: str, query: str = "") -> list[str]:
            answer = client.get(f"/api/now/table/{name}?sysparm_fields=sys_id&sysparm_limit=50&sysparm_query={query}",
                                headers=ADMIN)
            return [row["sys_id"] for row in answer.get_json()["result"]]

        admin = ids("sys_user", SPARED)
        spared = {*admin, *ids("sys_user_has_role", f"user={admin[0]}")}
        known[table] = [i for i in ids(table) if i not in spared] if table in defs.tables else []
    return known[table]


def _aim_at_a_record(case, app) -> None:
    """Half the generated sys_ids (those starting 0-7) become a real record's, picked by the rest, so
    that reads, updates, deletes and actions reach records and not only 404s."""
    sys_id = (case.path_parameters or {}).get("sys_id")
    if not isinstance(sys_id, str) or not re.fullmatch("[0-7][0-9a-f]{31}", sys_id):
        return
    pool = _records(app, _target(case.operation.path))
    if pool:
        case.path_parameters["sys_id"] = pool[int(sys_id, 16) % len(pool)]


@pytest.mark.slow
@FUZZED.parametrize()
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_schemathesis(case, fuzz_app):
    """Every operation, destructive ones on sys_user and sys_user_has_role included, each on a fresh
    database: schemathesis's examples, coverage (boundary and invalid values) and fuzzing phases,
    positive and negative, checked for server errors and answers the document does not describe."""
    _aim_at_a_record(case, fuzz_app)
    case.call_and_validate(app=fuzz_app, headers=ADMIN, checks=CHECKS)
