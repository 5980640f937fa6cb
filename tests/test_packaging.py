"""pyproject.toml and environment.yml list the same dependencies with the same bounds."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"torch": "pytorch"}  # PyPI name -> conda-forge name, where they differ


def split_requirement(text):
    name, bounds = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", text).groups()
    return name.lower(), bounds.replace(" ", "")


def pyproject_requirements():
    """The quoted entries of ``dependencies = [...]`` and ``dev = [...]`` (no tomllib: Python 3.10 lacks it)."""
    text = (REPO / "pyproject.toml").read_text()
    lists = re.findall(r"^(?:dependencies|dev) = \[(.*?)\]", text, re.M | re.S)
    assert len(lists) == 2
    return dict(split_requirement(r) for block in lists for r in re.findall(r'"([^"]+)"', block))


def conda_requirements():
    text = (REPO / "environment.yml").read_text().split("dependencies:", 1)[1]
    entries = [line.strip()[2:] for line in text.splitlines() if re.match(r"^  - [a-z]", line)]
    return dict(split_requirement(e) for e in entries if not e.startswith(("python", "pip")))


def test_same_dependencies_in_both_files():
    expected = {CONDA_NAMES.get(name, name): bounds for name, bounds in pyproject_requirements().items()}
    assert conda_requirements() == expected


def test_only_conda_forge_and_editable_install():
    text = (REPO / "environment.yml").read_text()
    assert re.search(r"channels:\s*\n\s*- conda-forge\s*\ndependencies:", text)
    assert "- -e .[dev]" in text


def test_bounds_are_lower_bounds_except_pml():
    for name, bounds in pyproject_requirements().items():
        assert bounds.startswith(">="), f"{name} needs a lower bound"
        if name != "pytorch-metric-learning":
            assert "<" not in bounds, f"{name} should have no upper bound"
    assert pyproject_requirements()["pytorch-metric-learning"] == ">=2.9,<3"
