"""The autograder, on a small made-up assignment and on lesson 01 itself."""
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course_utils.instructor import assign, grade

REPO = Path(__file__).resolve().parent.parent


def meta(grade_id, solution=False, points=None):
    m = {"grade": points is not None, "grade_id": grade_id, "locked": not solution, "schema_version": 3,
         "solution": solution, "task": False}
    if points is not None:
        m["points"] = points
    return {"nbgrader": m}


def assignment(add="    return a + b", mul="    return a * b"):
    """An instructor notebook with two exercises, each with a check holding a hidden test."""
    cell = nbformat.v4.new_code_cell
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        cell("import math"),
        cell(f"def add(a, b):\n    # BEGIN SOLUTION\n{add}\n    # END SOLUTION", metadata=meta("add", True)),
        cell("assert add(1, 2) == 3\n### BEGIN HIDDEN TESTS\nassert add(-1, 1) == 0\n### END HIDDEN TESTS",
             metadata=meta("add_check", points=2)),
        cell(f"def mul(a, b):\n    # BEGIN SOLUTION\n{mul}\n    # END SOLUTION", metadata=meta("mul", True)),
        cell("assert mul(2, 3) == 6\n### BEGIN HIDDEN TESTS\nassert mul(0, 5) == 0\n### END HIDDEN TESTS",
             metadata=meta("mul_check", points=3)),
        cell("print('the end')"),
    ]
    return nb


@pytest.fixture
def course(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    nbformat.write(assignment(), source / "hw.ipynb")
    return source


def grader(*args, module="course_utils.instructor.grade") -> subprocess.CompletedProcess:
    """The grader's command line, run in a subprocess as an instructor would."""
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True)


def run_grader(source, submission, tmp_path, timeout=20):
    report = tmp_path / "report.json"
    out = grader(submission, "--source", source, "--json", report, "--timeout", timeout, "--out", tmp_path / "book")
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(report.read_text()), out.stdout


def submit(tmp_path, nb, name="hw.ipynb"):
    folder = tmp_path / "submission"
    folder.mkdir(exist_ok=True)
    nbformat.write(nb, folder / name)
    return folder


def statuses(report):
    return {row["grade_id"]: (row["points"], row["status"]) for row in report["notebooks"][0]["exercises"]}


def test_instructor_full_student_zero_one_solved_partial(course, tmp_path):
    report, stdout = run_grader(course, course / "hw.ipynb", tmp_path)
    assert (report["notebooks"][0]["points"], report["notebooks"][0]["max_points"]) == (5, 5)
    assert "add_check" in stdout and "5/5" in stdout
    student = assign.student_notebook(nbformat.read(course / "hw.ipynb", as_version=4))
    report, _ = run_grader(course, submit(tmp_path, student), tmp_path)
    assert report["notebooks"][0]["points"] == 0
    assert statuses(report)["add_check"][1].startswith("failed: NotImplementedError")
    student.cells[1].source = "def add(a, b):\n    return a + b"
    report, _ = run_grader(course, submit(tmp_path, student), tmp_path)
    assert statuses(report) == {"add_check": (2, "passed"), "mul_check": (0, statuses(report)["mul_check"][1])}


def test_hidden_tests_and_tampered_checks(course, tmp_path):
    nb = assignment(add="    return 3", mul="    return a * b")  # passes the visible test of add only
    nb.cells[4].source = "pass  # the student emptied the check"
    report, _ = run_grader(course, submit(tmp_path, nb), tmp_path)
    assert statuses(report)["add_check"][0] == 0 and "AssertionError" in statuses(report)["add_check"][1]
    assert statuses(report)["mul_check"] == (3, "passed")


def test_infinite_loop_and_exception_cost_only_their_exercise(course, tmp_path):
    nb = assignment(add="    while True:\n        pass", mul="    return a * b")
    report, _ = run_grader(course, submit(tmp_path, nb), tmp_path, timeout=3)
    assert statuses(report)["add_check"] == (0, "timed out after 3 s")
    assert statuses(report)["mul_check"] == (3, "passed")
    nb = assignment(add="    return a + b", mul="    raise ValueError('oops')")
    report, _ = run_grader(course, submit(tmp_path, nb), tmp_path)
    assert statuses(report) == {"add_check": (2, "passed"), "mul_check": (0, "failed: ValueError: oops")}


def test_deleted_cells(course, tmp_path):
    nb = assignment()
    del nb.cells[3]  # the mul solution
    del nb.cells[1:3]  # the add solution and its check
    report, _ = run_grader(course, submit(tmp_path, nb), tmp_path)
    assert statuses(report)["add_check"] == (0, "solution cell 'add' was deleted")
    assert statuses(report)["mul_check"] == (0, "solution cell 'mul' was deleted")
    nb = assignment()
    del nb.cells[2]  # only a check: the grader puts the instructor's back, right after the solution
    report, _ = run_grader(course, submit(tmp_path, nb), tmp_path)
    assert report["notebooks"][0]["points"] == 5


def without_metadata(nb):
    """The notebook as an editor that drops cell metadata, or copying cells into a fresh notebook, leaves it."""
    nb = nbformat.from_dict(nb)
    for cell in nb.cells:
        cell.metadata = {}
    return nb


def test_solution_cells_without_metadata_are_found_by_the_name_they_define(course):
    instructor = nbformat.read(course / "hw.ipynb", as_version=4)
    nb = without_metadata(assignment())
    nb.cells.insert(1, nbformat.v4.new_code_cell("def add(a, b):\n    return 0  # a first try"))
    nb.cells[4].metadata = meta("mul", True)  # this one kept its metadata
    recovered, notes = grade.recover_solutions(nb, instructor)
    assert notes == {"add": "nbgrader metadata lost: graded the cell that defines add"}
    ids = [assign.grading(c).get("grade_id") for c in recovered.cells]
    assert ids == [None, None, "add", None, "mul", None, None]  # the last definition of add is the solution
    prepared = [assign.grading(c).get("grade_id") for c in grade.prepare(recovered, instructor).cells]
    assert prepared == [None, None, "add", "add_check", None, "mul", "mul_check", None, None]
    del nb.cells[1:3]  # no cell defines add any more: deleted, as before
    assert grade.recover_solutions(nb, instructor)[1] == {}


def test_a_killed_grader_keeps_finished_rows_and_resume_skips_them(course, tmp_path):
    """Rows are on disk as each submission finishes; --resume grades only the rest and reports them all."""
    for name in ("ann", "ben"):
        (tmp_path / name).mkdir()
        nbformat.write(assignment(), tmp_path / name / "hw.ipynb")
    book = tmp_path / "book"
    book.mkdir()
    first = grader(tmp_path / "ann", "--source", course, "--out", book)
    assert first.returncode == 0, first.stderr[-2000:]
    log = (book / "graded.jsonl").read_text().splitlines()
    assert len(log) == 1 and json.loads(log[0])["points"] == 5
    (tmp_path / "ann" / "hw.ipynb").write_text("{ changed after grading: not graded again")
    out = grader(tmp_path / "ann", tmp_path / "ben", "--source", course, "--out", book, "--resume",
                 "--json", tmp_path / "r.json")
    report = json.loads((tmp_path / "r.json").read_text())
    assert [nb["points"] for nb in report["notebooks"]] == [5, 5] and "1/1" in out.stderr
    assert len((book / "graded.jsonl").read_text().splitlines()) == 2


def test_lost_metadata_is_graded_with_the_hidden_tests_and_flagged(course, tmp_path):
    nb = without_metadata(assignment(add="    return 3", mul="    return a * b"))  # add fails a hidden test
    report, stdout = run_grader(course, submit(tmp_path, nb), tmp_path)
    assert statuses(report)["add_check"][0] == 0 and "AssertionError" in statuses(report)["add_check"][1]
    assert statuses(report)["mul_check"] == (3, "passed")
    notes = [row["note"] for row in report["notebooks"][0]["exercises"]]
    assert notes == [f"nbgrader metadata lost: graded the cell that defines {name}" for name in ("add", "mul")]
    assert "passed  [nbgrader metadata lost: graded the cell that defines mul]" in stdout


def test_dead_kernel_and_unreadable_notebook(course, tmp_path):
    nb = assignment(mul="    return a * b\nimport os\nos._exit(1)")
    report, _ = run_grader(course, submit(tmp_path, nb), tmp_path)
    assert statuses(report)["add_check"] == (2, "passed")
    assert statuses(report)["mul_check"][0] == 0 and "not run" in statuses(report)["mul_check"][1]
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "hw.ipynb").write_text("{ this is not json")
    report, _ = run_grader(course, folder, tmp_path)
    assert report["notebooks"][0]["points"] == 0
    assert all("unreadable" in s for _, s in statuses(report).values())


def test_a_class_in_one_run_with_feedback_and_a_renamed_file(course, tmp_path):
    """One folder per student: each row names its submission; a renamed file is reported, not lost."""
    students = {"alice": assignment(), "bob": assignment(mul="    raise ValueError('x' * 500)")}
    for name, nb in students.items():
        (tmp_path / name).mkdir()
        nbformat.write(nb, tmp_path / name / "hw.ipynb")
    (tmp_path / "carol").mkdir()
    nbformat.write(assignment(), tmp_path / "carol" / "hw (1).ipynb")  # renamed: matched by its grade_ids
    nbformat.write(nbformat.v4.new_notebook(), tmp_path / "carol" / "notes.ipynb")  # no exercise: skipped
    report_path, feedback = tmp_path / "class.json", tmp_path / "feedback"
    folders = [tmp_path / name for name in ("alice", "bob", "carol")]
    out = grader(*folders, "--source", course, "--json", report_path, "--feedback", feedback, "--jobs", 2,
                 "--out", tmp_path / "book")
    assert out.returncode == 1  # something was skipped: the instructor must look
    assert "grading: 100%" in out.stderr and "3/3" in out.stderr  # the progress bar
    report = json.loads(report_path.read_text())
    totals = {Path(nb["submission"]).parent.name: nb["points"] for nb in report["notebooks"]}
    assert totals == {"alice": 5, "bob": 2, "carol": 5}
    assert "alice/hw.ipynb" in out.stdout and "bob/hw.ipynb" in out.stdout and "SKIPPED" in out.stdout
    assert report["skipped"][0]["submission"].endswith("notes.ipynb")
    bob_mul = report["notebooks"][1]["exercises"][1]["status"]
    assert bob_mul == "failed: ValueError: " + "x" * 500  # the JSON keeps the whole message
    assert sorted(p.name for p in feedback.iterdir()) == ["alice__hw.ipynb", "bob__hw.ipynb", "carol__hw (1).ipynb"]
    bob = nbformat.read(feedback / "bob__hw.ipynb", as_version=4)
    assert not any("HIDDEN" in c.source or "mul(0, 5)" in c.source for c in bob.cells)  # no hidden tests
    one_at_a_time = grader(*folders, "--source", course, "--json", tmp_path / "serial.json", "--jobs", 1,
                           "--out", tmp_path / "book1")
    assert json.loads((tmp_path / "serial.json").read_text()) == report  # --jobs 2 changed nothing but the time
    assert one_at_a_time.stdout == out.stdout


def test_lesson_01_zero_and_partial(tmp_path):
    """The real lesson in quick mode, two students in one run: the student copy (nothing solved) and a copy with one
    exercise solved. Full marks need no third run: nbval executes the instructor's notebook, hidden tests included,
    and the made-up assignment's tests grade a full solution through the same code."""
    source = REPO / "notebooks" / "01_embeddings.ipynb"
    student = assign.student_notebook(nbformat.read(source, as_version=4))
    partial = nbformat.from_dict(student)
    solution = next(c for c in nbformat.read(source, as_version=4).cells
                    if assign.grading(c).get("grade_id") == "cosine_distance")
    index = next(i for i, c in enumerate(partial.cells) if assign.grading(c).get("grade_id") == "cosine_distance")
    partial.cells[index] = solution
    for name, nb in (("zero", student), ("partial", partial)):
        (tmp_path / name).mkdir()
        nbformat.write(nb, tmp_path / name / source.name)
    out = grader(tmp_path / "zero", tmp_path / "partial", "--json", tmp_path / "r.json", "--out", tmp_path / "book",
                 "--feedback", tmp_path / "feedback", "--jobs", 2)
    assert out.returncode == 0, out.stderr[-3000:]
    zero, report = json.loads((tmp_path / "r.json").read_text())["notebooks"]
    total = report["max_points"]
    assert total >= 4 and zero["max_points"] == total and zero["points"] == 0
    assert statuses({"notebooks": [report]})["cosine_distance_check"][1] == "passed"
    assert 0 < report["points"] < total
    # the student copy runs top to bottom except at the exercises: only their cells raise
    executed = nbformat.read(tmp_path / "feedback" / f"zero__{source.name}", as_version=4)
    failing = [c for c in executed.cells if any(o.output_type == "error" for o in c.get("outputs", []))]
    assert failing and all(assign.grading(c) for c in failing)
    assert not any(assign.BEGIN_HIDDEN in c.source or "_gr_" in c.source for c in executed.cells)


def test_written_answers_stay_the_students_and_are_left_for_hand_grading(tmp_path):
    """A markdown answer cell (nbgrader: solution and grade) is not a check: the grader keeps the student's text."""
    instructor = assignment()
    answer = nbformat.v4.new_markdown_cell("The model answer.", metadata=meta("why", True, points=1))
    instructor.cells.insert(3, answer)
    source = tmp_path / "source"
    source.mkdir()
    nbformat.write(instructor, source / "hw.ipynb")
    student = assign.student_notebook(instructor)
    student.cells[3].source = "My own prediction."
    prepared = grade.prepare(student, instructor)
    assert prepared.cells[3].source == "My own prediction."
    report, table = run_grader(source, submit(tmp_path, student), tmp_path)
    row = next(r for r in report["notebooks"][0]["exercises"] if r["grade_id"] == "why")
    assert (row["points"], row["max_points"], row["status"]) == (0, 0, "written answer: grade by hand")
    assert "worth 1 point" in row["note"] and "grade by hand" in table
