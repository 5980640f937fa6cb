#!/usr/bin/env python3
"""Set up and run the deep metric learning course. Needs only Python 3.10+ and pip.

    python3 course.py test    # create/reuse .venv, ruff, unit tests + every notebook through nbval (quick mode)
    python3 course.py run     # create/reuse .venv, check data, run every notebook (full mode, claims strict) -> build/,
                              # then build the course website from them -> build/site/
    python3 course.py site    # build the website again from the notebooks an earlier run left in build/
    python3 course.py lab     # create/reuse .venv, open JupyterLab in notebooks/
"""
import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent
VENV = REPO / ".venv"
PYTHON = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
MARKER = VENV / ".course-installed"


def sh(*cmd, env=None) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], cwd=REPO, check=True, env=env)


def ensure_env() -> None:
    """Create .venv and install the course into it, unless pyproject.toml is unchanged since the last install."""
    if sys.version_info < (3, 10):
        sys.exit(f"The course needs Python 3.10 or newer; this is {sys.version.split()[0]}.")
    stamp = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    if MARKER.is_file() and MARKER.read_text() == stamp and PYTHON.is_file():
        print(f"Reusing {VENV}", flush=True)
        return
    if not PYTHON.is_file():
        print(f"Creating {VENV}", flush=True)
        try:
            venv.create(VENV, with_pip=True)
        except subprocess.CalledProcessError:
            sys.exit("Could not create a virtual environment with pip. On Debian or Ubuntu, install the "
                     "package python3-venv (sudo apt install python3-venv), remove .venv/ and try again.")
    sh(PYTHON, "-m", "pip", "install", "--disable-pip-version-check", "-e", ".[lab,dev,site]")
    MARKER.write_text(stamp)


def check_data() -> None:
    sh(PYTHON, "-c", "from course_utils import data; data.verify(); print('Data files verified.')")


def parallel(env) -> list:
    """pytest-xdist options: one worker per core (``COURSE_TEST_JOBS`` overrides; 1 runs everything in one process),
    each notebook's cells in order on one worker (``--dist loadscope``: one test module or notebook per unit of
    work), and one torch thread per worker so the workers don't fight over the cores; idle OpenMP threads (of
    every library that starts them) sleep instead of spinning, as in ``course_utils.instructor.workers``."""
    jobs = int(os.environ.get("COURSE_TEST_JOBS") or os.cpu_count() or 1)
    if jobs <= 1:
        return []
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return ["-n", str(jobs), "--dist", "loadscope"]


LONGEST_TESTS = ("test_site.py", "test_grade_attacks.py", "test_gradebook.py", "test_nbgrader_cycle.py",
                 "test_grade.py")


def test_order() -> list:
    """What pytest runs, in the order the workers take it up: the longest first, so that the short test modules fill
    the gaps at the end. The website's browser test (a quick run of every lesson, then the browser: minutes on one
    worker) goes first, the notebooks beside it, then the grader's long modules, then the rest."""
    first, long = ["tests/" + LONGEST_TESTS[0]], ["tests/" + name for name in LONGEST_TESTS[1:]]
    rest = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                  if p.name not in LONGEST_TESTS)
    return [*first, "notebooks", *long, *rest]


def command_env(command: str, environ) -> dict:
    """The environment a command runs in: unbuffered output; ``test`` in quick mode and offline; ``run`` offline
    unless ``COURSE_OFFLINE`` says otherwise (lesson 10 then downloads no ImageNet weights)."""
    env = dict(environ, PYTHONUNBUFFERED="1")
    if command == "run":
        env.setdefault("COURSE_OFFLINE", "1")
    if command == "test":
        env.update(COURSE_QUICK="1", COURSE_OFFLINE="1")  # whatever the environment says
    return env


def main(argv) -> int:
    command = argv[0] if argv else ""
    if command not in {"run", "test", "lab", "site"}:
        print(__doc__)
        return 2
    ensure_env()
    env = command_env(command, os.environ)
    if command == "site":
        sh(PYTHON, "-m", "course_utils.instructor.site", *argv[1:], env=env)
        return 0
    check_data()
    if command == "run":
        sh(PYTHON, "-m", "course_utils.instructor.run_course", *argv[1:], env=env)
    elif command == "test":
        # the linter first (seconds): the package, tests, benchmarks and the notebooks' code cells (pyproject.toml)
        sh(PYTHON, "-m", "ruff", "check", "--no-cache", ".", env=env)
        sh(PYTHON, "-m", "pytest", "--nbval", "--nbval-current-env", *parallel(env), *test_order(), *argv[1:],
           env=env)
    else:
        sh(PYTHON, "-m", "jupyter", "lab", "--notebook-dir", REPO / "notebooks", *argv[1:], env=env)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except subprocess.CalledProcessError as err:
        sys.exit(err.returncode)
