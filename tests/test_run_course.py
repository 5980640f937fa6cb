"""The course runner and the set-up script, on tiny notebooks made by the test."""
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parent.parent


def write_notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_runner_saves_notebooks_html_and_results(tmp_path):
    good = write_notebook(tmp_path / "01_good.ipynb", "from course_utils import results",
                          "import os; print(os.environ['COURSE_QUICK'])",
                          "results.record('01_good', {'p1': 0.5})")
    bad = write_notebook(tmp_path / "02_bad.ipynb", "raise ValueError('broken lesson')")
    out = tmp_path / "build"
    run = subprocess.run([sys.executable, "-m", "course_utils.instructor.run_course", "--quick", "--no-site",
                          "--out", str(out), str(bad), str(good)], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 1
    assert "02_bad.ipynb" in run.stdout and "FAILED" in run.stdout and "broken lesson" in run.stdout
    assert "FAILED: ValueError: broken lesson" in run.stdout and "\x1b[" not in run.stdout  # one line, no colours
    failed = nbformat.read(out / "02_bad.ipynb", as_version=4)  # saved up to its error, for the instructor to read
    error = failed.cells[0].outputs[0]
    assert error["output_type"] == "error" and "broken lesson" in error["evalue"]
    assert "01_good.ipynb" in run.stdout and " ok" in run.stdout
    assert (out / "01_good.html").is_file()
    executed = nbformat.read(out / "01_good.ipynb", as_version=4)
    assert executed.cells[1].outputs[0]["text"].strip() == "1"
    everything = json.loads((out / "results.json").read_text())
    assert everything["01_good"]["p1"] == 0.5 and everything["01_good"]["wall_time_s"] > 0
    assert "wall_time_s" in everything["02_bad"]
    assert "Headline results" in run.stdout and "p1" in run.stdout


def test_runner_runs_two_notebooks_at_once(tmp_path):
    """``--jobs 2``: each notebook waits for a file the other one writes, so they pass only side by side; their
    kernels' idle threads sleep (``OMP_WAIT_POLICY``) and both record into the one results file."""
    handshake = ("import os, time\n"
                 "from pathlib import Path\n"
                 "from course_utils import results\n"
                 f"folder = Path({str(tmp_path)!r})\n"
                 "(folder / '{me}.here').touch()\n"
                 "deadline = time.time() + 60\n"
                 "while not (folder / '{other}.here').exists() and time.time() < deadline:\n"
                 "    time.sleep(0.1)\n"
                 "assert (folder / '{other}.here').exists(), 'not run side by side'\n"
                 "results.record('{me}', {{'passive': os.environ['OMP_WAIT_POLICY'] == 'PASSIVE'}})")
    first = write_notebook(tmp_path / "01_a.ipynb", handshake.format(me="01_a", other="02_b"))
    second = write_notebook(tmp_path / "02_b.ipynb", handshake.format(me="02_b", other="01_a"))
    out = tmp_path / "build"
    run = subprocess.run([sys.executable, "-m", "course_utils.instructor.run_course", "--quick", "--no-site",
                          "--jobs", "2", "--out", str(out), str(first), str(second)], capture_output=True, text=True,
                         cwd=REPO, env={k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 at a time" in run.stdout and run.stdout.count(" ok") == 2
    everything = json.loads((out / "results.json").read_text())
    assert {lesson: row["passive"] for lesson, row in everything.items()} == {"01_a": 1.0, "02_b": 1.0}


def test_course_script_explains_its_commands():
    run = subprocess.run([sys.executable, str(REPO / "course.py")], capture_output=True, text=True)
    assert run.returncode == 2
    for command in ("run", "test", "lab", "site"):
        assert f"course.py {command}" in run.stdout


def test_saved_notebooks_drop_progress_bars_only():
    import nbformat

    from course_utils.instructor.run_course import drop_progress_bars

    bar = nbformat.v4.new_output("display_data", data={
        "application/vnd.jupyter.widget-view+json": {"model_id": "x"}, "text/plain": "epochs:   0%|   | 0/3"})
    slider = nbformat.v4.new_output("display_data", data={
        "application/vnd.jupyter.widget-view+json": {"model_id": "y"}, "text/plain": "interactive(...)"})
    text = nbformat.v4.new_output("stream", text="epoch 1: 0.5\n")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("fit()", outputs=[bar, text, slider])])
    drop_progress_bars(nb)
    assert nb.cells[0].outputs == [text, slider]


def test_full_runs_are_strict_and_check_the_prose(tmp_path):
    """Without --quick, a claim its run contradicts fails the lesson, and a number the text quotes that the run did
    not print fails the run."""
    claim = write_notebook(tmp_path / "01_claim.ipynb", "from course_utils import lesson, setup\nconfig = setup()",
                           "lesson.claim(config, 0.41 > 0.45, 'a beats b')")
    quoted = write_notebook(tmp_path / "02_quoted.ipynb", "print('map_r 0.4523')")
    nb = nbformat.read(quoted, as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("MAP@R is 0.452 here, and 0.810 in another run."))
    nbformat.write(nb, quoted)
    out = tmp_path / "build"
    env = {k: v for k, v in os.environ.items() if k not in {"COURSE_STRICT", "CI"}}
    run = subprocess.run([sys.executable, "-m", "course_utils.instructor.run_course", "--jobs", "1", "--out", str(out),
                          str(claim), str(quoted)], capture_output=True, text=True, cwd=REPO, env=env)
    assert run.returncode == 1
    assert "01_claim.ipynb" in run.stdout and "FAILED" in run.stdout and "a beats b" in run.stdout
    assert "02_quoted.ipynb" in run.stdout.split("FAILED")[1] and "02_quoted.ipynb cell 1: '0.810'" in run.stderr
    assert "'0.452'" not in run.stderr
    assert nbformat.read(out / "02_quoted.ipynb", as_version=4).metadata["course_run"] == {"quick": False}


def test_the_capstone_runs_alone_first_and_the_rest_in_lesson_order():
    from course_utils.instructor.run_course import batches

    names = ["00_course_setup", "02_contrastive_loss", "04_beyond_triplets", "08_capstone_benchmark", "10_own_images"]
    groups = batches([Path(f"notebooks/{n}.ipynb") for n in names], jobs=2)
    assert [([p.stem for p in group], jobs) for group, jobs in groups] == [
        ([names[3]], 1), ([names[0], names[1], names[2], names[4]], 2)]
    assert [jobs for _, jobs in batches([Path("notebooks/01_embeddings.ipynb")], jobs=2)] == [2]  # no capstone


def test_course_script_runs_the_tests_and_the_course_offline():
    import importlib.util

    spec = importlib.util.spec_from_file_location("course_script", REPO / "course.py")
    course = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(course)  # defines functions only: main runs under __name__ == "__main__"
    assert course.command_env("test", {"COURSE_OFFLINE": "0"})["COURSE_OFFLINE"] == "1"  # tests: always
    assert course.command_env("test", {})["COURSE_QUICK"] == "1"
    assert course.command_env("run", {})["COURSE_OFFLINE"] == "1"  # the course: unless told otherwise
    assert course.command_env("run", {"COURSE_OFFLINE": "0"})["COURSE_OFFLINE"] == "0"
    assert "COURSE_OFFLINE" not in course.command_env("lab", {})  # a student's JupyterLab may download
