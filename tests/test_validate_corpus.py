"""`caseloom validate` against a corpus of broken definitions (tests/broken/).

Each file of the corpus is one file of the loans app (tests/apps/loans) with exactly one
mistake. Its header says where it goes and what validate must report:

    # replaces: rules/loans.yaml                 (or `# adds:` for a new file)
    # expect: rules/loans.yaml:12:9 onyl          (PATH:LINE:COL of the mistake, a word of the message)
    # mistake: what is wrong, in words

The test copies the app, puts the file in place and runs `caseloom validate`: it must fail
with exactly one error, at that line and column, whose message names the word.
"""

from __future__ import annotations

import difflib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from caseloom.cli import main
from conftest import DEFINITIONS, ROOT

LOANS = ROOT / "tests" / "apps" / "loans"
BROKEN = ROOT / "tests" / "broken"
HEADER = re.compile(r"# (?P<mode>replaces|adds): (?P<target>\S+)\n"
                    r"# expect: (?P<path>\S+):(?P<line>\d+):(?P<column>\d+) (?P<word>\S+)\n"
                    r"# mistake: (?P<mistake>.+)\n")
LOCATED = re.compile(r"^\S+:\d+:\d+: ")  # an error line: PATH:LINE:COL: message


@dataclass(frozen=True)
class Case:
    file: Path
    mode: str
    target: str
    path: str
    line: int
    column: int
    word: str
    mistake: str

    @property
    def body(self) -> str:
        """The file without its three header lines (the original file's own comments stay)."""
        return self.file.read_text().split("\n", 3)[3]


def read_case(file: Path) -> Case:
    found = HEADER.match(file.read_text())
    assert found, f"{file.name}: the header must be `# replaces|adds: PATH`, `# expect: PATH:LINE:COL WORD`, `# mistake: ...`"
    return Case(file, found["mode"], found["target"], found["path"], int(found["line"]), int(found["column"]),
                found["word"], found["mistake"])


CASES = [read_case(file) for file in sorted(BROKEN.glob("*.yaml"))]


def validate(folder: Path, scripts: Path):
    return CliRunner().invoke(main, ["validate", str(folder)], env={"CASELOOM_SCRIPTS": str(scripts)})


def test_the_corpus_is_large_enough_and_each_case_is_one_file_of_the_app():
    assert len(CASES) >= 40
    for case in CASES:
        assert (LOANS / case.target).exists() == (case.mode == "replaces"), case.file.name
        assert case.path == case.target, f"{case.file.name}: the mistake is in the file it puts in place"


@pytest.mark.parametrize("case", [c for c in CASES if c.mode == "replaces"], ids=lambda c: c.file.stem)
def test_each_case_differs_from_the_app_in_one_line(case):
    """One mistake: one line changed or added, so a change to the app shows here as a stale case."""
    original = (LOANS / case.target).read_text().splitlines()
    changed = [line for line in difflib.ndiff(original, case.body.splitlines()) if line.startswith(("+ ", "- "))]
    assert len([line for line in changed if line.startswith("+ ")]) == 1, "\n".join(changed)
    assert len([line for line in changed if line.startswith("- ")]) <= 1, "\n".join(changed)


@pytest.mark.parametrize("folder", [DEFINITIONS, LOANS], ids=["definitions", "loans"])
def test_validate_accepts_the_shipped_applications(folder):
    scripts = ROOT / "scripts" if folder == DEFINITIONS else LOANS / "scripts"
    result = validate(folder, scripts)
    assert result.exit_code == 0, result.stderr
    assert result.output.strip().endswith("valid")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.file.stem)
def test_validate_reports_the_one_mistake_at_its_line_and_column(case, tmp_path):
    app = tmp_path / "loans"
    shutil.copytree(LOANS, app)
    (app / case.target).write_text(case.file.read_text())
    result = validate(app, app / "scripts")
    errors = [line for line in result.stderr.splitlines() if LOCATED.match(line)]
    where = f"{app}/{case.path}:{case.line}:{case.column}: "
    assert result.exit_code == 1, f"{case.mistake}: validate accepted it\n{result.output}"
    assert len(errors) == 1, f"{case.mistake}: expected one error at {where}, got:\n" + "\n".join(errors)
    assert errors[0].startswith(where), f"{case.mistake}: expected at {where}, got:\n{errors[0]}"
    assert case.word in errors[0][len(where):], f"{case.mistake}: the message should name {case.word!r}:\n{errors[0]}"


@pytest.mark.parametrize("target, change, where, word", [
    ("roles.yaml", lambda text: "roles: 5\n", "roles.yaml:1:8", "object"),
    ("properties/loans.yaml", lambda text: "properties: [loans.require_approval]\n", "properties/loans.yaml:1:13",
     "object"),
    ("tables/loan_work.yaml", lambda text: text.replace("fields:\n", "fields:\n\tbroken: 1\n", 1), "tables/loan_work.yaml",
     "YAML"),
], ids=["roles not a mapping", "properties not a mapping", "a tab in the SLA table's file"])
def test_a_file_that_cannot_be_read_at_all_is_one_error(tmp_path, target, change, where, word):
    """A file whose names cannot be read (`roles: 5`, or YAML that does not parse) is the one error:
    what names its roles, properties or tables (and the SLA tables its `sla: true` makes) is not
    told again that they are unknown."""
    app = tmp_path / "loans"
    shutil.copytree(LOANS, app)
    (app / target).write_text(change((app / target).read_text()))
    result = validate(app, app / "scripts")
    errors = [line for line in result.stderr.splitlines() if LOCATED.match(line)]
    assert result.exit_code == 1 and len(errors) == 1, "\n".join(errors)
    assert errors[0].startswith(f"{app}/{where}") and word in errors[0], errors[0]
