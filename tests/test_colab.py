"""The Colab badges and set-up cell, made from the repository URL in pyproject.toml."""
import shutil
from pathlib import Path

import nbformat

from course_utils.instructor import colab

REPO = Path(__file__).resolve().parent.parent
NEW = "https://github.com/someone/fork-of-the-course"


def test_repo_url_comes_from_pyproject(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project.urls]\nRepository = "https://github.com/a/b.git"\n')
    assert colab.repo_url(tmp_path / "pyproject.toml") == "https://github.com/a/b"


def test_badge_opens_the_notebook_on_colab():
    assert colab.badge("01_x.ipynb", NEW).endswith(
        "(https://colab.research.google.com/github/someone/fork-of-the-course/blob/main/notebooks/01_x.ipynb)")


def test_sync_rewrites_badge_and_setup_cell(tmp_path):
    path = tmp_path / "01_embeddings.ipynb"
    shutil.copy(REPO / "notebooks" / "01_embeddings.ipynb", path)
    assert colab.sync(path, NEW) is True
    nb = nbformat.read(path, as_version=4)
    assert colab.badge("01_embeddings.ipynb", NEW) in nb.cells[0].source
    assert f'"{NEW}.git"' in nb.cells[1].source
    assert colab.sync(path, NEW) is False


def test_setup_cell_does_nothing_outside_colab(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(colab.setup_cell(NEW), {})  # our own template
    assert Path.cwd() == tmp_path and list(tmp_path.iterdir()) == []


def test_readme_badges_point_at_the_repository():
    text = (REPO / "README.md").read_text()
    assert colab.BADGE_RE.search(text)
    assert colab.sync_badges(text, colab.repo_url()) == text


def test_setup_cell_installs_only_the_base():
    """No extras on Colab: its own torch, Jupyter and ipywidgets stay (tests/test_packaging.py checks the base)."""
    source = colab.setup_cell(NEW)
    assert '"pip", "install", "-q", "-e", "/content/course"]' in source
    assert "[lab" not in source and "dev]" not in source
