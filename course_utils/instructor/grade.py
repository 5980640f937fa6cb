"""Autograder: run each submitted notebook in a fresh kernel with the instructor's check cells (hidden
tests included) and report points per exercise.

    python -m course_utils.instructor.grade SUBMISSION [SUBMISSION ...] [--json report.json] [--jobs N]

SUBMISSION is a notebook or a folder of notebooks; each is matched by file name with the instructor's
notebook in --source (default: the course's notebooks/). Submissions are graded --jobs at a time, each in
its own kernel. Submitted code runs with your permissions: grade in a container or a throw-away account.
"""
import argparse
import json
import os
import re
import sys
from pathlib import Path

import nbformat

from .. import claims
from ..paths import notebooks_dir
from .assign import grading
from .run_course import QUIET_KERNEL
from .workers import run_all

DEFINITION = re.compile(r"^(?:def|class)\s+(\w+)|^(\w+)\s*=(?!=)", re.M)


def is_written_answer(cell) -> bool:
    """An nbgrader answer cell graded by hand (solution and grade both set), such as a predicted outcome."""
    meta = grading(cell)
    return bool(meta.get("solution") and meta.get("grade"))


def checks_with_exercises(instructor) -> list:
    """``[(check cell, grade_id of the solution cell just before it, or None)]`` in notebook order; written
    answers are not checks (the student's text stays, for grading by hand)."""
    out, last_solution = [], None
    for cell in instructor.cells:
        meta = grading(cell)
        if is_written_answer(cell):
            continue
        if meta.get("solution"):
            last_solution = meta["grade_id"]
        if meta.get("grade"):
            out.append((cell, last_solution))
            last_solution = None
    return out


def defined_names(source: str) -> list:
    """The names a cell defines at top level, in order: functions, classes and assigned variables."""
    return [function or variable for function, variable in DEFINITION.findall(source)]


def recover_solutions(submission, instructor):
    """The submission with each solution cell whose nbgrader metadata was lost found again: the last code cell
    without metadata that defines the instructor's name gets the metadata back. Also ``{grade_id: note}``."""
    nb, recovered = nbformat.from_dict(submission), {}
    present = {grading(c).get("grade_id") for c in nb.cells}
    for solution in instructor.cells:
        meta, names = grading(solution), defined_names(solution.source)
        if solution.cell_type != "code" or not meta.get("solution") or meta["grade_id"] in present or not names:
            continue
        found = [c for c in nb.cells
                 if c.cell_type == "code" and not grading(c) and names[0] in defined_names(c.source)]
        if found:
            found[-1].metadata["nbgrader"] = dict(meta)
            recovered[meta["grade_id"]] = f"nbgrader metadata lost: graded the cell that defines {names[0]}"
    return nb, recovered


def prepare(submission, instructor):
    """The submission with every check cell replaced by (or, if deleted, re-inserted from) the instructor's."""
    nb = nbformat.from_dict(submission)
    ids = lambda: [grading(c).get("grade_id") for c in nb.cells]
    for check, solution_id in checks_with_exercises(instructor):
        grade_id = grading(check)["grade_id"]
        if grade_id in ids():
            nb.cells[ids().index(grade_id)] = nbformat.from_dict(check)
        else:
            at = ids().index(solution_id) + 1 if solution_id in ids() else len(nb.cells)
            nb.cells.insert(at, nbformat.from_dict(check))
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


def execute(nb, timeout: int, cwd: Path):
    """Run every cell, errors and all; a cell running past ``timeout`` seconds is interrupted."""
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    client = NotebookClient(nb, timeout=timeout, allow_errors=True, interrupt_on_timeout=True, kernel_name="python3",
                            extra_arguments=QUIET_KERNEL, resources={"metadata": {"path": str(cwd)}})
    try:
        client.execute()
    except DeadKernelError:
        pass  # cells after the crash have not run: they score nothing
    return nb


def cell_status(cell, timeout: int) -> str:
    """'passed', or why the cell earned nothing."""
    if cell.execution_count is None and not cell.outputs:
        return "not run (the kernel died before this cell)"
    for output in cell.outputs:
        if output.output_type == "error":
            if output.ename == "KeyboardInterrupt":
                return f"timed out after {timeout} s"
            return f"failed: {output.ename}: {str(output.evalue).splitlines()[0] if output.evalue else ''}"
    return "passed"


def report_row(check, status: str, note: str = "") -> dict:
    """A report row for one check cell: its points if ``status`` is 'passed', else none."""
    meta = grading(check)
    points = meta.get("points", 0) if status == "passed" else 0
    return {"grade_id": meta["grade_id"], "points": points, "max_points": meta.get("points", 0),
            "status": status, "note": note}


def score(executed, instructor, submission, timeout: int, recovered=None) -> list:
    """One row per exercise check: grade_id, points, max_points, status, note (``recovered``'s, if any)."""
    by_id = {grading(c).get("grade_id"): c for c in executed.cells}
    submitted = {grading(c).get("grade_id") for c in submission.cells}
    rows = []
    for check, solution_id in checks_with_exercises(instructor):
        if solution_id is not None and solution_id not in submitted:
            status = f"solution cell '{solution_id}' was deleted"
        else:
            status = cell_status(by_id[grading(check)["grade_id"]], timeout)
        rows.append(report_row(check, status, (recovered or {}).get(solution_id, "")))
    for answer in filter(is_written_answer, instructor.cells):
        row = report_row(answer, "written answer: grade by hand")
        rows.append({**row, "max_points": 0, "note": f"worth {row['max_points']} point(s), not counted here"})
    return rows


def grade_notebook(path: Path, source_dir: Path, timeout: int = 600, feedback=None) -> dict:
    """Grade one submitted notebook against the instructor notebook of the same name; with ``feedback``
    (a folder), also save the executed notebook there as ``<submission folder>__<notebook>``."""
    instructor = nbformat.read(source_dir / path.name, as_version=4)
    try:
        submission = nbformat.read(path, as_version=4)
    except Exception as err:  # unreadable file: every exercise scores zero
        status = f"notebook unreadable: {type(err).__name__}"
        rows = [report_row(check, status) for check, _ in checks_with_exercises(instructor)]
    else:
        submission, recovered = recover_solutions(submission, instructor)
        executed = execute(prepare(submission, instructor), timeout, source_dir)
        rows = score(executed, instructor, submission, timeout, recovered)
        if feedback is not None:
            Path(feedback).mkdir(parents=True, exist_ok=True)
            nbformat.write(executed, Path(feedback) / f"{path.resolve().parent.name}__{path.name}")
    return {"submission": str(path), "notebook": path.name, "points": sum(r["points"] for r in rows),
            "max_points": sum(r["max_points"] for r in rows), "exercises": rows}


def grade_all(tasks, jobs: int) -> list:
    """``grade_notebook(*task)`` for every task, ``jobs`` at a time in worker processes (see
    ``workers.share_cores``), with a progress bar; the results in the order of ``tasks``."""
    from tqdm.auto import tqdm

    graded = dict(tqdm(run_all(grade_notebook, tasks, jobs), total=len(tasks), desc="grading", unit="notebook"))
    return [graded[i] for i in range(len(tasks))]


def collect(paths) -> list:
    """Every .ipynb named, or found directly in a named folder."""
    found = []
    for path in map(Path, paths):
        found += sorted(path.glob("*.ipynb")) if path.is_dir() else [path]
    return found


def format_report(report: dict) -> str:
    """The report as a table: one row per exercise of each submission, a total per submission."""
    lines = [f"{'submission':<44}{'exercise':<26}{'points':>8}  status"]
    for nb in report["notebooks"]:
        name = f"{Path(nb['submission']).resolve().parent.name}/{nb['notebook']}"[-43:]
        for row in nb["exercises"]:
            status = row["status"] if len(row["status"]) <= 100 else row["status"][:99] + "…"
            status += f"  [{row['note']}]" if row.get("note") else ""
            lines.append(f"{name:<44}{row['grade_id']:<26}{row['points']:>4}/{row['max_points']:<3}  {status}")
        lines.append(f"{name:<44}{'total':<26}{nb['points']:>4}/{nb['max_points']:<3}")
    for skipped in report["skipped"]:
        lines.append(f"SKIPPED {skipped['submission']}: {skipped['reason']}")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    """The command line; --source defaults to the course's notebooks/."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("submissions", nargs="+", type=Path)
    parser.add_argument("--source", type=Path, help="instructor notebooks (default: the course's notebooks/)")
    parser.add_argument("--json", type=Path, help="write the report here as JSON")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    parser.add_argument("--full", action="store_true", help="run in full mode (default: quick mode)")
    parser.add_argument("--feedback", type=Path, help="save each executed submission in this folder")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="submissions graded at once (default: the number of CPU cores)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    args.source = (args.source or notebooks_dir()).resolve()
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["COURSE_QUICK"] = "0" if args.full else "1"
    # full mode grades on the course's claims, as course.py run does
    os.environ[claims.STRICT_ENV] = "1" if args.full else "0"
    tasks, skipped = [], []
    for path in collect(args.submissions):
        if (args.source / path.name).is_file():
            tasks.append((path, args.source, args.timeout, args.feedback))
        else:
            reason = f"no instructor notebook named {path.name!r} in {args.source} (was the file renamed?)"
            skipped.append({"submission": str(path), "reason": reason})
    report = {"notebooks": grade_all(tasks, args.jobs), "skipped": skipped}
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
