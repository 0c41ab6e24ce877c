"""What every app in a process builds alike is built once (storage, compiled templates, URL
builders), and an app still shows what its own definitions and templates say."""

from __future__ import annotations

import shutil

import pytest

from caseloom.definitions import load_folder
from caseloom.runtime import Runtime
from conftest import DEFINITIONS, ROOT


def test_runtimes_on_the_same_definitions_share_one_storage_and_other_definitions_get_their_own(config, definitions):
    first, second = Runtime(config, definitions), Runtime(config, definitions)
    other = Runtime(config, load_folder(DEFINITIONS))
    try:
        assert first.storage is second.storage
        assert other.storage is not first.storage
        assert set(other.storage.metadata.tables) == set(first.storage.metadata.tables)
    finally:
        for runtime in (first, second, other):
            runtime.engine.dispose()


def test_a_template_edited_before_the_next_app_is_made_shows_its_new_text(make_app, tmp_path):
    ui = tmp_path / "ui"
    shutil.copytree(ROOT / "ui", ui, ignore=shutil.ignore_patterns("node_modules"))
    before = make_app(ui=str(ui)).test_client().get("/login")
    assert before.status_code == 200 and "Sign-in form edited" not in before.text
    login = ui / "templates" / "login.html"
    login.write_text(login.read_text().replace("{% block content %}", "{% block content %}<p>Sign-in form edited</p>", 1))
    after = make_app(ui=str(ui)).test_client().get("/login")
    assert after.status_code == 200 and "<p>Sign-in form edited</p>" in after.text
    again = make_app().test_client().get("/login")  # the shipped template, in a third app
    assert again.status_code == 200 and "Sign-in form edited" not in again.text


@pytest.mark.parametrize(("endpoint", "values", "expected"), [
    ("static", {"filename": "caseloom.css", "v": "abc"}, "/static/caseloom.css?v=abc"),
    ("ui_vendor", {"filename": "htmx.org/dist/htmx.min.js"}, "/ui/vendor/htmx.org/dist/htmx.min.js"),
    ("ui_vendor", {"filename": "a b/ü.js", "x": "1"}, "/ui/vendor/a%20b/%C3%BC.js?x=1"),
])
def test_every_app_builds_the_same_urls_with_builders_compiled_once(make_app, endpoint, values, expected):
    apps = [make_app(), make_app()]
    for app in apps:
        with app.test_request_context():
            from flask import url_for

            assert url_for(endpoint, **values) == expected
    rules = [next(r for r in app.url_map.iter_rules() if r.endpoint == endpoint) for app in apps]
    assert rules[0] is not rules[1]
    assert rules[0]._build_unknown.__func__ is rules[1]._build_unknown.__func__  # compiled once
