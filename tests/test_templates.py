"""Templates compile once, are checked at load, and read dot-walks as one key each."""

from __future__ import annotations

import pytest

from caseloom.templates import TemplateProblem, compile_template, render, template_problems

NAMES = ("record", "previous", "inputs", "created", "user", "now")


@pytest.mark.parametrize("text, walks, names", [
    ("{{ record.number }}", (), {"record"}),
    ("{{ record.location.name }}", ("location.name",), {"record"}),
    ("{{ record['location'].manager.name }}", ("location.manager.name",), {"record"}),
    ("{{ previous.state }} -> {{ record.state }} by {{ user.name }} at {{ now }}", (), {"previous", "record", "user",
                                                                                         "now"}),
    ("{% for n in inputs.notes %}{{ n }}{% endfor %}", (), {"inputs"}),
])
def test_a_compiled_template_knows_its_names_and_dot_walks(text, walks, names):
    template = compile_template(text)
    assert template.walks == walks and template.names == names


def test_a_dot_walk_is_read_as_one_key_in_both_render_paths():
    context = {"record": {"location.name": "Dock 4", "number": "WO1"}}
    assert render("{{ record.number }} at {{ record.location.name }}", context) == "WO1 at Dock 4"
    assert render("{{ record.location.name | upper }}", context) == "DOCK 4"  # Jinja's path, same key


@pytest.mark.parametrize("text, problem", [
    ("{{ recrod.number }}", "unknown name 'recrod'"),
    ("{% if %}", "template syntax error"),
    ("{{ record.number ", "template syntax error"),
    ("{{ record.nosuch }}", "'nosuch' is not a field"),
])
def test_template_problems_name_the_mistake(text, problem):
    def check(root, path):
        return None if path in ("number", "location.name") else f"{path!r} is not a field"

    problems = template_problems(text, NAMES, check)
    assert len(problems) == 1 and problem in problems[0]


@pytest.mark.parametrize("text", [
    "[{{ record.location.name }}]",  # plain substitution, joined as strings
    "[{{ record.location.name | trim if record.location.name is not none else record.location.name }}]",  # Jinja's path
], ids=["substitution", "jinja"])
def test_an_empty_value_is_shown_as_nothing_in_both_render_paths(text):
    assert render(text, {"record": {"location.name": None}}) == "[]"


def test_a_missing_value_is_a_template_problem_not_a_crash():
    with pytest.raises(TemplateProblem, match="record"):
        render("{{ record.location.name }}", {"record": {}})
