"""Submissions that attack the grader, graded in one run beside honest ones: each attacker scores zero on the
exercise it attacks, the honest submissions score exactly what they score graded alone, and a report is always left.
The oracle for "the attack would work": every attacker answers the attacked exercise wrongly, so any point it earns
there is the attack's; ``test_the_attacks_fool_an_unprotected_check`` shows the forging ones do fool a plain run."""
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from test_grade import meta

WRONG = "def cosine_distance(x, y):\n    return 1 - x @ y.T  # the rows are not L2-normalised\n"
RIGHT = ("def cosine_distance(x, y):\n    # BEGIN SOLUTION\n    x, y = F.normalize(x, dim=1), F.normalize(y, dim=1)\n"
         "    return 1 - x @ y.T\n    # END SOLUTION\n")
STEAL = """
import json, pathlib
from course_utils import paths
for candidate in ["hw.ipynb", "../hw.ipynb", "../../hw.ipynb", paths.notebooks_dir() / "hw.ipynb",
                  pathlib.Path(paths.__file__).parent.parent / "notebooks" / "hw.ipynb", {absolute!r}]:
    try:
        exec(json.load(open(candidate))["cells"][1]["source"])  # the instructor's reference answer
    except Exception:
        pass
"""
ATTACKS = {
    "patched_check": "checks.lesson01.check_cosine_distance = lambda f: print('✓ cosine_distance is correct.')\n",
    "patched_helper": ("import itertools\n_calls = itertools.count()\n"
                       "torch.allclose = lambda *a, **k: (lambda n: n % 3 == 2 or n >= 9)(next(_calls))\n"),
    "silenced_errors": ("ip = get_ipython()\nip.showtraceback = lambda *a, **k: None\n"
                        "ip.set_custom_exc((BaseException,), lambda *a, **k: print('✓ correct'))\n"),
    "fake_output": "print('✓ cosine_distance is correct.')\nimport builtins\nbuiltins.AssertionError = Warning\n",
    "reads_instructor": STEAL,
    "writes_instructor": """
import json, os, pathlib
from course_utils import checks as c
for path in [{absolute!r}, pathlib.Path(c.__file__).parent / "lesson01.py"]:
    try:
        os.chmod(path, 0o644)
        if str(path).endswith(".ipynb"):
            nb = json.load(open(path))
            for cell in nb["cells"][2::2]:
                cell["source"] = "pass"
            json.dump(nb, open(path, "w"))
        else:
            pathlib.Path(path).write_text("def check_cosine_distance(f):\\n    pass\\n")
    except Exception as err:
        print("write refused:", err)
""",
    "kills_parent": ("import os, signal\nfor pid in (os.getppid(), os.getpgid(os.getppid())):\n    try:\n"
                     "        os.kill(pid, signal.SIGKILL)\n    except Exception as err:\n        print(err)\n"),
    "memory_hog": "hog = [bytearray(2**28) for _ in range(64)]  # 16 GiB\n",
    "fork_bomb": ("import os, time\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n"
                  "        time.sleep(1)\n"),
    "huge_output": ("print('x' * 2**30)\ntry:\n    open('big.bin', 'wb').write(b'x' * 2**30)\nexcept OSError as err:\n"
                    "    print(err)\n"),
}
# stopped only when the kernel cannot reach the instructor's folder: as root (it runs as another user) or --sandbox
NEEDS_ANOTHER_USER = {"reads_instructor", "writes_instructor", "kills_parent", "fork_bomb"}


def assignment(cosine=RIGHT, attack=""):
    """Two exercises: lesson 01's cosine_distance with its real check, and a plain one that no attack touches."""
    cell = nbformat.v4.new_code_cell
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        cell("import torch\nimport torch.nn.functional as F\nfrom course_utils import checks"),
        cell(cosine + attack, metadata=meta("cosine_distance", True)),
        cell("checks.lesson01.check_cosine_distance(cosine_distance)\n### BEGIN HIDDEN TESTS\n"
             "assert float(cosine_distance(torch.eye(2), torch.eye(2))[0, 1]) == 1.0\n### END HIDDEN TESTS",
             metadata=meta("cosine_distance_check", points=2)),
        cell("def add(a, b):\n    # BEGIN SOLUTION\n    return a + b\n    # END SOLUTION", metadata=meta("add", True)),
        cell("assert add(1, 2) == 3", metadata=meta("add_check", points=1)),
    ]
    return nb


def grade(tmp_path, folders, name, *extra, timeout=600):
    out = tmp_path / name
    run = subprocess.run([sys.executable, "-m", "course_utils.instructor.grade", *map(str, folders), "--source",
                          str(tmp_path / "source"), "--out", str(out), "--json", str(out / "report.json"),
                          "--timeout", "20", "--memory", "6", *extra],
                         capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    return {Path(nb["submission"]).parent.name: {r["grade_id"]: (r["points"], r["status"]) for r in nb["exercises"]}
            for nb in report["notebooks"]}, run


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The class (honest and attacking) graded in one run, --jobs 2; the honest ones graded alone too."""
    tmp = tmp_path_factory.mktemp("attacks")
    (tmp / "source").mkdir()
    nbformat.write(assignment(), tmp / "source" / "hw.ipynb")
    absolute = str(tmp / "source" / "hw.ipynb")
    students = {"honest_right": assignment(), "honest_wrong": assignment(WRONG)}
    for name, code in ATTACKS.items():
        students[name] = assignment(WRONG, code.replace("{absolute!r}", repr(absolute)))
    for name, nb in students.items():
        (tmp / name).mkdir()
        nbformat.write(nb, tmp / name / "hw.ipynb")
    before = (tmp / "source" / "hw.ipynb").read_bytes()
    together, run = grade(tmp, [tmp / name for name in students], "together", "--jobs", "2")
    alone, _ = grade(tmp, [tmp / "honest_right", tmp / "honest_wrong"], "alone", "--jobs", "1")
    return {"together": together, "alone": alone, "run": run, "tmp": tmp, "before": before}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_each_attacker_scores_zero_on_the_attacked_exercise(graded, attack):
    if attack in NEEDS_ANOTHER_USER and os.geteuid() != 0:
        pytest.skip("stopped only when the grader runs as root (kernels as another user) or with --sandbox")
    points, status = graded["together"][attack]["cosine_distance_check"]
    assert points == 0, status


def test_honest_submissions_score_as_when_graded_alone(graded):
    for name in ("honest_right", "honest_wrong"):
        assert graded["together"][name] == graded["alone"][name]
    assert graded["together"]["honest_right"]["cosine_distance_check"] == (2, "passed")
    assert "not L2-normalised" in graded["together"]["honest_wrong"]["cosine_distance_check"][1]


def test_a_report_for_everyone_and_the_instructors_notebook_untouched(graded):
    assert set(graded["together"]) == {"honest_right", "honest_wrong", *ATTACKS}
    assert (graded["tmp"] / "together" / "grades.csv").is_file()
    assert (graded["tmp"] / "source" / "hw.ipynb").read_bytes() == graded["before"]


def test_the_attacks_fool_an_unprotected_check():
    """The oracle: run in one plain process, as a grader that trusts the notebook would, the forging attacks make
    lesson 01's check pass a wrong answer (so the zero above is the grader's doing)."""
    for attack in ("patched_check", "patched_helper"):
        code = (f"import torch\nimport torch.nn.functional as F\nfrom course_utils import checks\n{WRONG}"
                f"{ATTACKS[attack]}checks.lesson01.check_cosine_distance(cosine_distance)\n")
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert run.returncode == 0 and "✓" in run.stdout, (attack, run.stderr[-2000:])


SANDBOXED = ("reads_instructor", "writes_instructor", "kills_parent", "fork_bomb")


def test_with_sandbox_the_attacks_that_need_another_user_are_stopped_too(graded):
    """--sandbox (bubblewrap): the instructor's checkout hidden, everything read-only but the workspace."""
    from course_utils.instructor import jail

    if not jail.sandbox_available():
        pytest.skip("bubblewrap is not installed, or cannot start here")
    tmp = graded["tmp"]
    together, _ = grade(tmp, [tmp / name for name in ("honest_right", *SANDBOXED)], "sandbox", "--sandbox",
                        "--jobs", "2")
    assert together["honest_right"] == graded["alone"]["honest_right"]
    for attack in SANDBOXED:
        assert together[attack]["cosine_distance_check"][0] == 0, together[attack]
    assert (tmp / "source" / "hw.ipynb").read_bytes() == graded["before"]


def test_each_grader_run_has_its_own_user_ids(monkeypatch):
    """Two graders on one machine (two classes, or the test suite's workers) must not share a kernel's user id: a
    fork bomb of one would fill the other's process limit, and a cleanup of one kill the other's kernels."""
    from types import SimpleNamespace

    from course_utils.instructor import jail

    def running(uids):
        return lambda attrs: [SimpleNamespace(info={"uids": SimpleNamespace(real=uid)}) for uid in uids]

    monkeypatch.setattr(jail.os, "getpid", lambda: 4096 * 3 + 5)  # block 5
    first = jail.FIRST_UID + 5 * jail.UID_BLOCK
    monkeypatch.setattr(jail.psutil, "process_iter", running([0, 1000]))
    jail.uid_base.cache_clear()
    assert jail.uid_base() == first
    monkeypatch.setattr(jail.psutil, "process_iter", running([0, first + 3]))  # another grader's kernel in block 5
    jail.uid_base.cache_clear()
    assert jail.uid_base() == first + jail.UID_BLOCK
    jail.uid_base.cache_clear()
