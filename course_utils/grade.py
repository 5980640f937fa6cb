"""Autograder: run each submitted notebook in a fresh kernel with the instructor's check cells (hidden
tests included) and report points per exercise.

    python -m course_utils.grade SUBMISSION [SUBMISSION ...] [--json report.json] [--timeout 600]

SUBMISSION is a notebook or a folder of notebooks; each is matched by file name with the instructor's
notebook in --source (default: the course's notebooks/). Submitted code runs with your permissions:
grade in a container or a throw-away account.
"""
import argparse
import json
import os
import sys
from pathlib import Path

import nbformat

from .assign import grading
from .run_course import QUIET_KERNEL

REPO = Path(__file__).resolve().parent.parent


def checks_with_exercises(instructor) -> list:
    """``[(check cell, grade_id of the solution cell just before it, or None)]`` in notebook order."""
    out, last_solution = [], None
    for cell in instructor.cells:
        meta = grading(cell)
        if meta.get("solution"):
            last_solution = meta["grade_id"]
        if meta.get("grade"):
            out.append((cell, last_solution))
            last_solution = None
    return out


def prepare(submission, instructor):
    """The submission with every check cell replaced by (or, if deleted, re-inserted from) the instructor's."""
    nb = nbformat.from_dict(submission)
    ids = lambda: [grading(c).get("grade_id") for c in nb.cells]  # noqa: E731
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


def score(executed, instructor, submission, timeout: int) -> list:
    """One row per exercise check: grade_id, points, max_points, status."""
    by_id = {grading(c).get("grade_id"): c for c in executed.cells}
    submitted = {grading(c).get("grade_id") for c in submission.cells}
    rows = []
    for check, solution_id in checks_with_exercises(instructor):
        meta = grading(check)
        if solution_id is not None and solution_id not in submitted:
            status = f"solution cell '{solution_id}' was deleted"
        else:
            status = cell_status(by_id[meta["grade_id"]], timeout)
        points = meta.get("points", 0) if status == "passed" else 0
        rows.append({"grade_id": meta["grade_id"], "points": points, "max_points": meta.get("points", 0),
                     "status": status})
    return rows


def grade_notebook(path: Path, source_dir: Path, timeout: int = 600, feedback=None) -> dict:
    """Grade one submitted notebook against the instructor notebook of the same name; with ``feedback``
    (a folder), also save the executed notebook there as ``<submission folder>__<notebook>``."""
    instructor = nbformat.read(source_dir / path.name, as_version=4)
    try:
        submission = nbformat.read(path, as_version=4)
    except Exception as err:  # unreadable file: every exercise scores zero
        rows = [{"grade_id": grading(c)["grade_id"], "points": 0, "max_points": grading(c).get("points", 0),
                 "status": f"notebook unreadable: {type(err).__name__}"} for c, _ in checks_with_exercises(instructor)]
    else:
        executed = execute(prepare(submission, instructor), timeout, source_dir)
        rows = score(executed, instructor, submission, timeout)
        if feedback is not None:
            Path(feedback).mkdir(parents=True, exist_ok=True)
            nbformat.write(executed, Path(feedback) / f"{path.resolve().parent.name}__{path.name}")
    return {"submission": str(path), "notebook": path.name, "points": sum(r["points"] for r in rows),
            "max_points": sum(r["max_points"] for r in rows), "exercises": rows}


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
            lines.append(f"{name:<44}{row['grade_id']:<26}{row['points']:>4}/{row['max_points']:<3}  {status}")
        lines.append(f"{name:<44}{'total':<26}{nb['points']:>4}/{nb['max_points']:<3}")
    for skipped in report["skipped"]:
        lines.append(f"SKIPPED {skipped['submission']}: {skipped['reason']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("submissions", nargs="+", type=Path)
    parser.add_argument("--source", type=Path, default=REPO / "notebooks", help="instructor notebooks")
    parser.add_argument("--json", type=Path, help="write the report here as JSON")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    parser.add_argument("--full", action="store_true", help="run in full mode (default: quick mode)")
    parser.add_argument("--feedback", type=Path, help="save each executed submission in this folder")
    args = parser.parse_args(argv)
    os.environ["COURSE_QUICK"] = "0" if args.full else "1"
    notebooks, skipped = [], []
    for path in collect(args.submissions):
        if (args.source / path.name).is_file():
            notebooks.append(grade_notebook(path, args.source.resolve(), args.timeout, args.feedback))
        else:
            reason = f"no instructor notebook named {path.name!r} in {args.source} (was the file renamed?)"
            skipped.append({"submission": str(path), "reason": reason})
    report = {"notebooks": notebooks, "skipped": skipped}
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
