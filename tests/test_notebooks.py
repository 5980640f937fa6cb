"""The committed notebooks: outputs stripped, one skeleton, Colab cell in sync, exercises in nbgrader format."""
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course_utils import colab

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
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: run `git restore` or clear outputs"


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
            assert len(cell.source.splitlines()) <= 30, cell.source[:80]


def exercise_cells(nb):
    return [(i, c) for i, c in enumerate(nb.cells) if "nbgrader" in c.metadata]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_exercises_in_nbgrader_format(path):
    nb = load(path)
    cells = exercise_cells(nb)
    for i, cell in cells:
        meta = cell.metadata.nbgrader
        assert meta["schema_version"] == 3 and meta["grade_id"]
        if meta["solution"]:
            assert re.search(r"^\s*# BEGIN SOLUTION$.*^\s*# END SOLUTION$", cell.source, re.M | re.S)
            check = nb.cells[i + 1].metadata.get("nbgrader", {})
            assert check.get("grade") is True and check.get("points", 0) > 0, "a check cell must follow"
            assert "checks.check_" in nb.cells[i + 1].source
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
            if cell.metadata.nbgrader["solution"]:
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


def test_lessons_02_to_04_share_one_budget():
    """Their results tables are compared with each other, so they must train on the same budget."""
    keys = ("TRAIN_PER_CLASS =", "EVAL_PER_CLASS =", "NUM_EPOCHS, BATCH_SIZE, LR, EMBEDDING_DIM =")
    budgets = []
    for path in NOTEBOOKS:
        if path.name[:2] in {"02", "03", "04"}:
            source = next(c.source for c in load(path).cells if "setup(seed=" in c.source)
            budgets.append([line for line in source.splitlines() if line.startswith(keys)])
    assert len(budgets) == 3 and budgets[0] == budgets[1] == budgets[2] and len(budgets[0]) == 3
