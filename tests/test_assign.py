"""Student copies: solutions and hidden tests gone, everything else unchanged; checks fail on the stub."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course_utils.instructor import assign

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_strip_solution_keeps_code_around_and_indentation():
    source = "def f(x):\n    \"\"\"Doc.\"\"\"\n    # BEGIN SOLUTION\n    y = x + 1\n    return y\n    # END SOLUTION\n"
    assert assign.strip_solution(source) == (
        "def f(x):\n    \"\"\"Doc.\"\"\"\n    # YOUR CODE HERE\n    raise NotImplementedError()\n")


def test_strip_solution_without_markers_stubs_the_whole_cell():
    assert assign.strip_solution("x = 1") == "# YOUR CODE HERE\nraise NotImplementedError()"
    assert assign.strip_solution("The answer is 42.", markdown=True) == "YOUR ANSWER HERE"


def test_unclosed_marker_is_an_error():
    with pytest.raises(ValueError, match="END SOLUTION"):
        assign.strip_solution("# BEGIN SOLUTION\nx = 1")


def test_strip_hidden_tests():
    source = "check(f)\n### BEGIN HIDDEN TESTS\nassert f(0) == 1\n### END HIDDEN TESTS"
    assert assign.strip_hidden_tests(source) == "check(f)"


def regions(source, begin, end):
    return re.findall(rf"^\s*{re.escape(begin)}\n(.*?)^\s*{re.escape(end)}", source, re.M | re.S)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_student_copy_leaks_no_solution_and_changes_nothing_else(path, tmp_path):
    assert assign.main([str(tmp_path), str(path)]) == 0
    student_text = (tmp_path / path.name).read_text()
    instructor = nbformat.read(path, as_version=4)
    secret = []
    for cell in instructor.cells:
        secret += regions(cell.source, assign.BEGIN_SOLUTION, assign.END_SOLUTION)
        secret += regions(cell.source, assign.BEGIN_HIDDEN, assign.END_HIDDEN)
    lines = {line.strip() for block in secret for line in block.splitlines() if line.strip()}
    for line in lines:
        assert line not in student_text, f"solution line leaked: {line}"
    student = nbformat.reads(student_text, as_version=4)
    for cell in student.cells:
        if cell.cell_type == "code":
            assert "BEGIN SOLUTION" not in cell.source and "HIDDEN TESTS" not in cell.source
    for cell, original in zip(student.cells, instructor.cells, strict=True):
        assert cell.metadata == original.metadata
        if not assign.grading(original):
            assert cell == original
    # byte for byte: putting the instructor's exercise cells back gives the instructor's file
    for i, original in enumerate(instructor.cells):
        if assign.grading(original):
            student.cells[i] = original
    assert nbformat.writes(student) + "\n" == path.read_text()


def exercises(nb):
    """(setup cell, [(solution cell, check cell)]) of a notebook."""
    setup_cell = next(c for c in nb.cells if "setup(seed=" in c.source)
    pairs = [(c, nb.cells[i + 1]) for i, c in enumerate(nb.cells)
             if assign.grading(c).get("solution") and c.cell_type == "code"]
    return setup_cell, pairs


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_checks_pass_on_solution_and_fail_on_stub(path):
    instructor = nbformat.read(path, as_version=4)
    student = assign.student_notebook(instructor)
    setup_cell, pairs = exercises(instructor)
    _, student_pairs = exercises(student)
    for (solution, check), (stub, _) in zip(pairs, student_pairs):
        if re.search(r"^def \w+_experiment\(", solution.source, re.M):  # needs the lesson's data: only the stub runs
            namespace = {}
            exec(stub.source, namespace)
            name = re.search(r"^def (\w+)", solution.source, re.M).group(1)
            with pytest.raises(NotImplementedError):
                namespace[name](0.5)
            continue
        namespace = {}
        exec(setup_cell.source, namespace)  # our own notebooks
        exec(solution.source, namespace)
        exec(check.source, namespace)  # the full check, hidden tests included
        exec(stub.source, namespace)
        with pytest.raises(AssertionError, match="not implemented"):
            exec(check.source, namespace)


def test_notebooks_by_bare_name_and_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert assign.main([str(tmp_path / "out"), "01_embeddings.ipynb"]) == 0
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["01_embeddings.ipynb"]
    with pytest.raises(SystemExit, match="No notebook 99_missing.ipynb"):
        assign.main([str(tmp_path / "out"), "99_missing.ipynb"])


def test_nbgrader_makes_the_same_student_copies(tmp_path):
    """nbgrader itself (the dev extra installs it) as the oracle: ``nbgrader generate_assignment`` on every lesson
    with exercises gives the cell sources and grading metadata of our student copies, with no solution."""
    (tmp_path / "source" / "course").mkdir(parents=True)
    lessons = [p for p in NOTEBOOKS if any(assign.grading(c) for c in nbformat.read(p, as_version=4).cells)]
    for path in lessons:
        shutil.copy(path, tmp_path / "source" / "course" / path.name)
    bin_dir = Path(sys.executable).parent  # nbgrader calls its `alembic` command: it must be on PATH
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    run = subprocess.run([str(bin_dir / "nbgrader"), "generate_assignment", "course", "--CourseDirectory.root=."],
                         capture_output=True, text=True, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    fields = ("grade_id", "solution", "grade", "points", "locked")
    for path in lessons:
        theirs = nbformat.read(tmp_path / "release" / "course" / path.name, as_version=4)
        ours = assign.student_notebook(nbformat.read(path, as_version=4))
        assert [c.source for c in theirs.cells] == [c.source for c in ours.cells]
        assert [[assign.grading(c).get(f) for f in fields] for c in theirs.cells] == \
               [[assign.grading(c).get(f) for f in fields] for c in ours.cells]
        assert not any(marker in c.source for c in theirs.cells for marker in ("BEGIN SOLUTION", "HIDDEN TESTS"))
