"""Packaging: pyproject.toml and environment.yml list the same dependencies; Colab's install leaves Colab's own
packages alone; a non-editable install works from the checkout; lessons never import the instructor tools."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"torch": "pytorch"}  # PyPI name -> conda-forge name, where they differ
PIP_ONLY = {"sphinx-mathjax-offline"}  # not on conda-forge: environment.yml's `pip install -e .[...]` installs it
EXTRAS = ("lab", "dev", "site")
TOOLS = ("assign", "grade", "colab", "run_course")  # course_utils.instructor.*, also under their old names
# What a Colab runtime has preinstalled (and this test environment too): the Colab install must keep them.
COLAB_OWN = {"torch", "torchvision", "jupyterlab", "notebook", "jupyter_server", "ipykernel", "ipywidgets",
             "widgetsnbextension", "jupyterlab_widgets", "ipython", "tornado"}


def split_requirement(text):
    name, bounds = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", text).groups()
    return name.lower(), bounds.replace(" ", "")


def toml_lists(text: str, table: str) -> dict:
    """``{key: [quoted strings]}`` for the lists in one ``[table]`` of a TOML text (Python 3.10 has no tomllib)."""
    body = re.search(rf"^\[{re.escape(table)}\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S).group(1)
    lists = re.findall(r"^([\w-]+) = \[(.*?)\]", body, re.M | re.S)
    return {key: re.findall(r'"([^"]+)"', block) for key, block in lists}


def requirement_lists():
    """``{"dependencies": [...], extra: [...]}``: the base requirements and each extra's, from pyproject.toml."""
    text = (REPO / "pyproject.toml").read_text()
    base = toml_lists(text, "project")
    return {"dependencies": base["dependencies"], **toml_lists(text, "project.optional-dependencies")}


def pyproject_requirements():
    """Every requirement of the base and the extras: ``{name: bounds}``."""
    return dict(split_requirement(r) for block in requirement_lists().values() for r in block)


def conda_requirements():
    text = (REPO / "environment.yml").read_text().split("dependencies:", 1)[1]
    entries = [line.strip()[2:] for line in text.splitlines() if re.match(r"^  - [a-z]", line)]
    return dict(split_requirement(e) for e in entries if not e.startswith(("python", "pip")))


def test_the_base_and_exactly_the_extras_lab_dev_and_site():
    assert sorted(requirement_lists()) == sorted(("dependencies", *EXTRAS))
    base = {split_requirement(r)[0] for r in requirement_lists()["dependencies"]}
    assert "jupyterlab" not in base and "ipywidgets" in base


def test_same_dependencies_in_both_files():
    expected = {CONDA_NAMES.get(name, name): bounds for name, bounds in pyproject_requirements().items()
                if name not in PIP_ONLY}
    assert conda_requirements() == expected


def test_only_conda_forge_and_editable_install():
    text = (REPO / "environment.yml").read_text()
    assert re.search(r"channels:\s*\n\s*- conda-forge\s*\ndependencies:", text)
    assert f"- -e .[{','.join(EXTRAS)}]" in text


def test_course_script_installs_every_extra():
    assert f'"-e", ".[{",".join(EXTRAS)}]"' in (REPO / "course.py").read_text()


def test_bounds_are_lower_bounds_except_pml():
    for name, bounds in pyproject_requirements().items():
        assert bounds.startswith(">="), f"{name} needs a lower bound"
        if name != "pytorch-metric-learning":
            assert "<" not in bounds, f"{name} should have no upper bound"
    assert pyproject_requirements()["pytorch-metric-learning"] == ">=2.9,<3"


def test_ipywidgets_lower_bound_is_met_by_colab():
    """Colab's preinstalled ipywidgets has long been 7.7.1: a higher lower bound would make pip replace it."""
    bound = pyproject_requirements()["ipywidgets"]
    assert tuple(int(x) for x in bound.removeprefix(">=").split(".")) <= (7, 7)


def copy_project(folder: Path) -> Path:
    """What pip needs to build the package, copied, so that its build files land outside the checkout."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, folder / name)
    shutil.copytree(REPO / "course_utils", folder / "course_utils", ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def pip(*args) -> subprocess.CompletedProcess:
    """``pip install`` offline, building with this environment's setuptools."""
    return subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-build-isolation", "--no-index",
                           *map(str, args)], capture_output=True, text=True)


def test_colab_install_keeps_colab_packages(tmp_path):
    """The Colab cell's `pip install -e`, dry-run in this environment, which holds what a Colab runtime holds."""
    project, report = copy_project(tmp_path), tmp_path / "report.json"
    out = pip("--dry-run", "--report", report, "-e", project)
    assert out.returncode == 0, f"a base dependency is missing here or bounded above what is installed:\n{out.stderr}"
    installs = {i["metadata"]["name"].lower().replace("-", "_") for i in json.loads(report.read_text())["install"]}
    assert installs & COLAB_OWN == set()
    assert "course_utils" in installs


def run_python(code: str, target: Path, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``code`` with only ``target`` and the standard environment to import from, in ``cwd``."""
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(target)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env)


def test_non_editable_install_runs_from_the_notebooks_folder(tmp_path):
    """`pip install .` (no editable link back to the checkout): the lessons still find the data from notebooks/."""
    target = tmp_path / "target"
    out = pip("--no-deps", "--target", target, copy_project(tmp_path))
    assert out.returncode == 0, out.stderr
    code = ("import course_utils, course_utils.data as d; print(course_utils.__file__); "
            "print(len(d.load_fashion_mnist('test')))")
    run = run_python(code, target, cwd=REPO / "notebooks")
    assert run.returncode == 0, run.stderr
    module_file, count = run.stdout.split()
    assert Path(module_file).is_relative_to(target) and int(count) == 10_000
    for package in (REPO / "course_utils").rglob("__init__.py"):  # every subpackage was installed
        assert (target / package.relative_to(REPO)).is_file(), package
    (tmp_path / "elsewhere").mkdir()
    run = run_python(code, target, cwd=tmp_path / "elsewhere")  # outside any checkout, COURSE_ROOT unset
    assert "CourseNotFoundError: Could not find the course's files" in run.stderr
    assert "set COURSE_ROOT to the checkout's path" in run.stderr


def test_lessons_never_import_the_instructor_tools():
    """Import every module a lesson may import; the instructor package must stay unloaded."""
    files = [p.relative_to(REPO).with_suffix("") for p in (REPO / "course_utils").rglob("*.py")]
    modules = sorted(".".join(f.parts).removesuffix(".__init__") for f in files
                     if f.parts[1] not in {*TOOLS, "instructor"} and f.name != "__main__")
    code = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m.startswith('course_utils.instructor')))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_runs_as_a_module_of_the_instructor_package(tool):
    run = subprocess.run([sys.executable, "-m", f"course_utils.instructor.{tool}", "--help"],
                         capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0 and f"course_utils.instructor.{tool}" in run.stdout
