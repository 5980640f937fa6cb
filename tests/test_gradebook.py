"""The gradebook and the class report of a generated class of 20 (a flat LMS download), checked against the answers
that made them; mistake codes, LMS file matching and the hand-graded merge on their own."""
import csv
import json
import subprocess
import sys

import nbformat
import pytest
from test_grade import meta
from test_grade_attacks import RIGHT, WRONG, assignment

from course_utils.instructor import gradebook, lms, mistakes

SIMILARITY = "def cosine_distance(x, y):\n    return F.normalize(x, dim=1) @ F.normalize(y, dim=1).T\n"
STUB = "def cosine_distance(x, y):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n"
CLASS = {"right": (RIGHT, 8), "unnormalised": (WRONG, 5), "similarity": (SIMILARITY, 4), "unsolved": (STUB, 3)}


def instructor():
    nb = assignment()
    nb.cells.append(nbformat.v4.new_markdown_cell("Why normalise?", metadata=meta("why", True, points=2)))
    return nb


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    """A flat LMS download of 20 submissions (names like smithjane_12345_67890_hw-1.ipynb) graded in one run."""
    tmp = tmp_path_factory.mktemp("class")
    (tmp / "source").mkdir()
    nbformat.write(instructor(), tmp / "source" / "hw.ipynb")
    (tmp / "download").mkdir()
    answers = {}
    for kind, (code, count) in CLASS.items():
        for i in range(count):
            who = f"{kind}{i}"
            answers[who] = kind
            nbformat.write(assignment(code), tmp / "download" / f"{who}_{1000 + i}_{2000 + i}_hw-1.ipynb")
    (tmp / "hand.csv").write_text("student,grade_id,points\nright0,why,2\nunsolved1,why,1\n")
    out = subprocess.run([sys.executable, "-m", "course_utils.instructor.grade", str(tmp / "download"), "--source",
                          str(tmp / "source"), "--out", str(tmp / "book"), "--hand-graded", str(tmp / "hand.csv"),
                          "--timeout", "60", "--jobs", "2"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return tmp / "book", answers, out.stdout


def test_grades_csv_has_a_row_per_student_and_the_points_their_answers_earn(book):
    folder, answers, _ = book
    rows = list(csv.DictReader(open(folder / "grades.csv")))
    assert rows[0]["student"] == gradebook.MAX_ROW
    assert (rows[0]["hw:cosine_distance_check"], rows[0]["hw:add_check"], rows[0]["hw:why"]) == ("2", "1", "2")
    assert rows[0]["total"] == "5"
    students = {r["student"]: r for r in rows[1:]}
    assert set(students) == set(answers) and len(students) == 20
    for who, kind in answers.items():
        expected = (2 if kind == "right" else 0) + 1 + {"right0": 2, "unsolved1": 1}.get(who, 0)
        assert float(students[who]["total"]) == expected, who
    lms_rows = list(csv.reader(open(folder / "lms.csv")))
    assert lms_rows[0] == ["Student", "SIS Login ID", "hw"] and lms_rows[1] == ["Points Possible", "", "5"]


def test_the_class_report_counts_passes_and_each_named_mistake(book):
    folder, _, stdout = book
    text = (folder / "class_report.txt").read_text()
    assert "8 of 20" in text
    lines = text.splitlines()
    named = {"rows were not L2-normalised": 5, "cosine *similarity*": 4, "unsolved:": 3}
    for words, count in named.items():
        line = next(line for line in lines if words in line)
        assert f": {count} of 20" in line, line
    assert text.strip() in stdout
    page = (folder / "class_report.html").read_text()
    assert page.count("<svg") == 2 and "8 of 20 passed" in page


def test_mistake_codes_are_stable_and_ignore_the_values():
    one = "failed: AssertionError: m=8, batch_size=64: expected 112 positive pairs, got 224: ordered pairs"
    two = "failed: AssertionError: m=4, batch_size=32: expected 48 positive pairs, got 96: ordered pairs"
    assert mistakes.code("x", one) == mistakes.code("x", two) != mistakes.code("y", one)
    assert mistakes.code("x", one).startswith("E") and len(mistakes.code("x", one)) == 6
    assert mistakes.code("x", "passed") == "" and mistakes.code("x", "timed out after 3 s") == "timeout"
    named = "failed: AssertionError: expected 1.0 (PML), got 2.0. That is exactly what you get if the mean is wrong."
    assert mistakes.mistake_text(named) == "the mean is wrong"


def test_lms_names_and_grade_ids_match_files_to_lessons(tmp_path):
    lessons = ["06_m_per_class_sampler.ipynb", "hw.ipynb"]
    assert lms.by_name(tmp_path / "smithjane_12345_67890_06_m_per_class_sampler-1.ipynb", lessons) == lessons[0]
    assert lms.by_name(tmp_path / "hw.ipynb", lessons) == "hw.ipynb"
    assert lms.by_name(tmp_path / "whatever.ipynb", lessons) is None
    nbformat.write(assignment(), tmp_path / "whatever.ipynb")
    assert lms.by_grade_ids(tmp_path / "whatever.ipynb", {"hw.ipynb": {"add", "cosine_distance"}, "x": {"y"}}) \
        == "hw.ipynb"
    assert lms.student(str(tmp_path / "smithjane_1_2_hw.ipynb"), "hw.ipynb") == "smithjane"
    assert lms.student(str(tmp_path / "alice" / "hw.ipynb"), "hw.ipynb") == "alice"


def test_hand_graded_points_are_capped_and_unknown_exercises_refused(tmp_path):
    report = {"notebooks": [{"submission": str(tmp_path / "ann" / "hw.ipynb"), "notebook": "hw.ipynb", "exercises": [
        {"grade_id": "why", "points": 0, "max_points": 0, "worth": 2, "status": "written answer: grade by hand",
         "mistake": "written"}]}]}
    points, maxima = gradebook.cells(report)
    (tmp_path / "hand.csv").write_text("student,grade_id,points\nann,why,5\n")
    gradebook.merge_hand_graded(points, maxima, tmp_path / "hand.csv")
    assert points["ann"][("hw.ipynb", "why")] == 2
    (tmp_path / "bad.csv").write_text("student,grade_id,points\nann,nope,1\n")
    with pytest.raises(SystemExit, match="nope"):
        gradebook.merge_hand_graded(points, maxima, tmp_path / "bad.csv")
    assert json.dumps(gradebook.table(points, maxima)[2]) == json.dumps(["ann", 2, 2, 2])
