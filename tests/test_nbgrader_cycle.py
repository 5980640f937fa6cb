"""The nbgrader route, whole, on lesson 01 (docs/grading.md): generate_assignment, a student's submission with one
exercise solved, autograde in quick mode with a cell timeout (the hidden tests run), generate_feedback, export. The
oracle: nbgrader's score is what our grader gives the same submission."""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

from course_utils.instructor import assign

REPO = Path(__file__).resolve().parent.parent
LESSON = REPO / "notebooks" / "01_embeddings.ipynb"


def nbgrader(tmp_path, *args):
    bin_dir = Path(sys.executable).parent  # nbgrader calls its `alembic` command: it must be on PATH
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", COURSE_QUICK="1")
    run = subprocess.run([str(bin_dir / "nbgrader"), *args], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert run.returncode == 0, (args, run.stdout[-2000:], run.stderr[-3000:])
    return run


def solved_one(nb):
    """The student copy with ``cosine_distance`` answered as the instructor did."""
    index = next(i for i, c in enumerate(nb.cells) if assign.grading(c).get("grade_id") == "cosine_distance")
    nb.cells[index].source = next(c.source for c in nbformat.read(LESSON, as_version=4).cells
                                  if assign.grading(c).get("grade_id") == "cosine_distance")
    return nb


def test_the_nbgrader_cycle_grades_as_our_grader_does(tmp_path):
    (tmp_path / "nbgrader_config.py").write_text(
        "c = get_config()\nc.CourseDirectory.root = '.'\nc.CourseDirectory.course_id = 'course'\n"
        "c.ExecutePreprocessor.timeout = 600\n")
    (tmp_path / "source" / "lesson01").mkdir(parents=True)
    shutil.copy(LESSON, tmp_path / "source" / "lesson01" / LESSON.name)
    nbgrader(tmp_path, "db", "student", "add", "jane")
    nbgrader(tmp_path, "db", "assignment", "add", "lesson01")
    nbgrader(tmp_path, "generate_assignment", "lesson01")
    released = nbformat.read(tmp_path / "release" / "lesson01" / LESSON.name, as_version=4)
    (tmp_path / "submitted" / "jane" / "lesson01").mkdir(parents=True)
    nbformat.write(solved_one(released), tmp_path / "submitted" / "jane" / "lesson01" / LESSON.name)
    nbgrader(tmp_path, "autograde", "lesson01")
    nbgrader(tmp_path, "generate_feedback", "lesson01")
    assert (tmp_path / "feedback" / "jane" / "lesson01" / "01_embeddings.html").is_file()
    nbgrader(tmp_path, "export")
    row = next(csv.DictReader(open(tmp_path / "grades.csv")))
    assert (row["student_id"], row["assignment"]) == ("jane", "lesson01")
    (tmp_path / "ours" / "jane").mkdir(parents=True)
    nbformat.write(solved_one(released), tmp_path / "ours" / "jane" / LESSON.name)
    ours = subprocess.run([sys.executable, "-m", "course_utils.instructor.grade", str(tmp_path / "ours" / "jane"),
                           "--out", str(tmp_path / "book"), "--json", str(tmp_path / "ours.json")],
                          capture_output=True, text=True)
    assert ours.returncode == 0, ours.stderr[-3000:]
    report = json.loads((tmp_path / "ours.json").read_text())["notebooks"][0]
    assert float(row["raw_score"]) == report["points"] == 2
