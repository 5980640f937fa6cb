"""The committed notebooks: outputs stripped, one skeleton, Colab cell in sync, exercises in nbgrader format."""
import ast
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course_utils.instructor import colab

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def load(path):
    return nbformat.read(path, as_version=4)


def test_there_are_lessons():
    assert [p.name[:2] for p in NOTEBOOKS][:2] == ["00", "01"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    """Strict nbval compares stored outputs; the executed copies live in build/, so none are committed."""
    for cell in load(path).cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, \
                f"{path.name}: run `git restore` or clear outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_skeleton(path):
    nb = load(path)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith(f"# Lesson {path.name[:2]}")
    assert colab.badge(path.name, colab.repo_url()) in first.source
    assert "**In this lesson you will**" in first.source
    assert colab.SETUP_TAG in nb.cells[1].metadata.get("tags", [])
    assert nb.cells[1].source == colab.setup_cell(colab.repo_url())
    setup_cells = [c for c in nb.cells if c.cell_type == "code" and "setup(seed=" in c.source]
    assert len(setup_cells) == 1
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "## Summary" in markdown and "## References" in markdown


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_code_cells_are_short(path):
    for cell in load(path).cells:
        if cell.cell_type == "code" and colab.SETUP_TAG not in cell.metadata.get("tags", []):
            assert len(cell.source.splitlines()) <= 40, cell.source[:80]


def exercise_cells(nb):
    return [(i, c) for i, c in enumerate(nb.cells) if "nbgrader" in c.metadata]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_exercises_in_nbgrader_format(path):
    nb = load(path)
    cells = exercise_cells(nb)
    for i, cell in cells:
        meta = cell.metadata.nbgrader
        assert meta["schema_version"] == 3 and meta["grade_id"]
        if meta["solution"] and cell.cell_type == "markdown":  # a written answer, graded by hand
            assert meta["grade"] is True and meta.get("points", 0) > 0, "a written answer needs grade and points"
        elif meta["solution"]:
            assert re.search(r"^\s*# BEGIN SOLUTION$.*^\s*# END SOLUTION$", cell.source, re.M | re.S)
            check = nb.cells[i + 1].metadata.get("nbgrader", {})
            assert check.get("grade") is True and check.get("points", 0) > 0, "a check cell must follow"
            assert re.search(r"\b\w+\.check_\w+\(", nb.cells[i + 1].source), "the check cell calls a check"
    ids = [cell.metadata.nbgrader["grade_id"] for _, cell in cells]
    assert len(ids) == len(set(ids))


def test_lesson_01_has_checked_exercises():
    nb = load(REPO / "notebooks" / "01_embeddings.ipynb")
    assert sum(c.metadata.nbgrader["solution"] for _, c in exercise_cells(nb)) >= 1


def test_later_cells_do_not_use_the_exercise_answers():
    """Student copies must run past unsolved exercises: only the check cell may call the student's function."""
    for path in NOTEBOOKS:
        nb = load(path)
        for i, cell in exercise_cells(nb):
            if cell.metadata.nbgrader["solution"] and cell.cell_type == "code":
                name = re.search(r"^def (\w+)", cell.source, re.M).group(1)
                later = [c.source for c in nb.cells[i + 2:] if c.cell_type == "code"]
                assert not any(re.search(rf"\b{name}\b", s) for s in later), f"{path.name}: {name} used later"


def test_a_raising_notebook_fails_nbval(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("raise RuntimeError('boom')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "broken.ipynb")
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval",
                          "--nbval-current-env", str(tmp_path / "broken.ipynb")],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 1 and "1 failed, 1 passed" in out.stdout, out.stdout[-2000:]


def code_cells(path):
    """The code cells of a notebook, Colab cell excluded (it is the same everywhere on purpose)."""
    return [c.source for c in load(path).cells
            if c.cell_type == "code" and colab.SETUP_TAG not in c.metadata.get("tags", [])]


def test_no_function_is_defined_in_two_notebooks():
    """A function two lessons need belongs in course_utils (DESIGN.md), not copied between notebooks."""
    seen = {}
    for path in NOTEBOOKS:
        for name in {m for source in code_cells(path) for m in re.findall(r"^def (\w+)", source, re.M)}:
            assert name not in seen, f"{name} is defined in {seen.get(name)} and {path.name}: move it to course_utils"
            seen[name] = path.name


def test_no_code_cell_is_repeated_across_notebooks():
    """No code cell of more than 3 lines appears, whitespace aside, in two notebooks."""
    seen = {}
    for path in NOTEBOOKS:
        for source in code_cells(path):
            key = "\n".join(line.strip() for line in source.strip().splitlines() if line.strip())
            if len(key.splitlines()) > 3:
                assert key not in seen, f"the same cell is in {seen[key]} and {path.name}:\n{source}"
                seen[key] = path.name


def test_lessons_02_to_04_share_one_budget():
    """Their results tables are compared with each other: the same budget, only fewer UMAP points allowed."""
    for path in NOTEBOOKS:
        if path.name[:2] in {"02", "03", "04"}:
            source = next(c for c in code_cells(path) if "setup(seed=" in c)
            calls = re.findall(r"lesson\.budget\(config(.*)\)", source)
            assert calls in ([""], [", umap_per_class=200"]), f"{path.name}: {calls}"


def test_imports_only_in_the_set_up_cell():
    for path in NOTEBOOKS:
        for source in code_cells(path):
            if "setup(seed=" not in source:
                assert not re.search(r"^(import|from) \w", source, re.M), \
                    f"{path.name}: import outside set-up:\n{source}"


def claim_text(node) -> str:
    """The literal text of a claim: a string, or an f-string's text up to its first placeholder."""
    if isinstance(node, ast.Constant):
        return node.value
    return node.values[0].value if isinstance(node.values[0], ast.Constant) else ""


def claims_in_notebooks():
    """``(lesson, text)`` of every ``lesson.claim(config, holds, text)`` call in the notebooks."""
    claims = []
    for path in NOTEBOOKS:
        for source in code_cells(path):
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.Call) and ast.unparse(node.func) == "lesson.claim":
                    claims.append((path.stem, claim_text(node.args[2])))
    return claims


def test_the_notebooks_make_claims():
    """The course website's page of claims (tests/test_site.py) lists these, with whether each held."""
    claims = claims_in_notebooks()
    assert len(claims) >= 15 and all(text for _, text in claims)
