"""Autograder: run each submitted notebook in a fresh kernel with the instructor's check cells (hidden
tests included) and report points per exercise; write the gradebook and the class report.

    python -m course_utils.instructor.grade SUBMISSION [SUBMISSION ...] [--out gradebook/] [--resume] [--jobs N]

SUBMISSION is a notebook or a folder of notebooks (one folder per student, or a flat LMS download); each is matched
to the instructor's notebook in --source (default: the course's notebooks/) by name or by the grade_ids it holds
(``lms``). Each is graded in a child process (``submission``), its kernel in a throw-away workspace with resource
limits (``jail``), its check cells armed so that a verdict cannot be forged (``verdict``); each report row is
appended to OUT/graded.jsonl as it finishes. See docs/grading.md for what is stopped with and without --sandbox.
"""
import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import nbformat

from .. import claims
from ..paths import notebooks_dir
from . import gradebook, jail, lms, mistakes, tamper, verdict
from .assign import grading, strip_hidden_tests
from .workers import run_isolated

GRADED = "graded.jsonl"

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


def arm_checks(nb, secret: str, sources: dict, files: dict):
    """The prepared notebook with each check cell armed (see ``verdict.arm``)."""
    for cell in nb.cells:
        meta = grading(cell)
        if cell.cell_type == "code" and meta.get("grade") and not meta.get("solution"):
            cell.source = verdict.arm(cell.source, secret, sources, files)
    return nb


def report_row(check, status: str, note: str = "") -> dict:
    """A report row for one check cell: its points if ``status`` is 'passed', else none; the mistake's code."""
    meta = grading(check)
    points = meta.get("points", 0) if status == "passed" else 0
    return {"grade_id": meta["grade_id"], "points": points, "max_points": meta.get("points", 0),
            "status": status, "note": note, "mistake": mistakes.code(meta["grade_id"], status)}


def score(executed, instructor, submission, timeout: int, recovered=None, client=None) -> list:
    """One row per exercise check: grade_id, points, max_points, status, note (``recovered``'s, if any), mistake;
    each check's status from the kernel's execute reply and the secret (``client``, a ``verdict.GradingClient``)."""
    index = {grading(c).get("grade_id"): i for i, c in enumerate(executed.cells)}
    submitted = {grading(c).get("grade_id") for c in submission.cells}
    replies, seen = (client.replies, client.seen) if client else ({}, set())
    rows = []
    for check, solution_id in checks_with_exercises(instructor):
        if solution_id is not None and solution_id not in submitted:
            status = f"solution cell '{solution_id}' was deleted"
        else:
            i = index[grading(check)["grade_id"]]
            status = verdict.verdict(replies.get(i), i in seen, timeout, getattr(client, "stopped", ""))
        rows.append(report_row(check, status, (recovered or {}).get(solution_id, "")))
    for answer in filter(is_written_answer, instructor.cells):
        row = report_row(answer, "written answer: grade by hand")
        rows.append({**row, "max_points": 0, "worth": row["max_points"],
                     "note": f"worth {row['max_points']} point(s), not counted here"})
    return rows


def notebook_report(path: Path, rows: list, notebook: str = None) -> dict:
    """One submission's report (``notebook``: the lesson it answers, by default its file name): rows, totals."""
    return {"submission": str(path), "notebook": notebook or path.name, "points": sum(r["points"] for r in rows),
            "max_points": sum(r["max_points"] for r in rows), "exercises": rows}


def zero_report(path: Path, instructor, status: str, notebook: str = None) -> dict:
    """Every exercise of ``instructor`` scoring nothing, with ``status``."""
    rows = [report_row(check, status) for check, _ in checks_with_exercises(instructor)]
    return notebook_report(path, rows, notebook)


def unreadable(path: Path, instructor, err, notebook: str = None) -> dict:
    """The report of a submission that is not a notebook."""
    return zero_report(path, instructor, f"notebook unreadable: {type(err).__name__}", notebook)


def feedback_name(path: Path) -> str:
    """``<submission folder>__<notebook>``: the feedback notebook's file name."""
    return f"{path.resolve().parent.name}__{path.name}"


def write_feedback(executed, instructor, out: Path) -> None:
    """The executed submission for its student: check cells as the student copy has them (no hidden tests), errors
    as their one-line message (a traceback would show the hidden tests' code)."""
    nb = nbformat.from_dict(executed)
    checks = {grading(c)["grade_id"]: c for c, _ in checks_with_exercises(instructor)}
    for cell in nb.cells:
        grade_id = grading(cell).get("grade_id")
        if grade_id in checks:
            cell.source = strip_hidden_tests(checks[grade_id].source)
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                output.traceback = [f"{output.ename}: {output.evalue}"]
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)


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
    for nb in report["notebooks"]:
        if Path(nb["submission"]).name != nb["notebook"]:
            lines.append(f"MATCHED {nb['submission']} -> {nb['notebook']}, student "
                         f"{lms.student(nb['submission'], nb['notebook'])}")
    for skipped in report["skipped"]:
        lines.append(f"SKIPPED {skipped['submission']}: {skipped['reason']}")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    """The command line; --source defaults to the course's notebooks/."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("submissions", nargs="+", type=Path)
    parser.add_argument("--source", type=Path, help="instructor notebooks (default: the course's notebooks/)")
    parser.add_argument("--out", type=Path, default=Path("gradebook"),
                        help="where graded.jsonl, grades.csv and the class report go (default: ./gradebook)")
    parser.add_argument("--json", type=Path, help="also write the whole report here as JSON")
    parser.add_argument("--resume", action="store_true", help="keep the submissions already in OUT/graded.jsonl")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    parser.add_argument("--full", action="store_true", help="run in full mode (default: quick mode)")
    parser.add_argument("--feedback", type=Path, help="save each executed submission in this folder")
    parser.add_argument("--hand-graded", type=Path, help="CSV of hand-graded points: student,grade_id,points")
    parser.add_argument("--sandbox", action="store_true", help="run each kernel inside bubblewrap")
    parser.add_argument("--memory", type=float, default=8, help="GiB of address space per kernel (default 8)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="submissions graded at once (default: the number of CPU cores)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.sandbox and not jail.sandbox_available():
        parser.error("--sandbox needs bubblewrap (apt-get install bubblewrap), and it cannot start here")
    args.source = (args.source or notebooks_dir()).resolve()
    return args


def tasks_of(args, found: list) -> tuple:
    """``(tasks, skipped)``: a task (a dict for ``submission``) per submission matched to an instructor notebook,
    with that notebook and the checks' sources as they are now."""
    sources, files = verdict.check_sources()
    instructors, tasks, skipped = {}, [], []
    env = {"COURSE_QUICK": "0" if args.full else "1", claims.STRICT_ENV: "1" if args.full else "0"}
    for path, notebook in found:
        if notebook is None:
            reason = f"no instructor notebook named {path.name!r} in {args.source} (was the file renamed?)"
            skipped.append({"submission": str(path), "reason": reason})
            continue
        if notebook not in instructors:
            instructors[notebook] = nbformat.read(args.source / notebook, as_version=4)
        tasks.append({"submission": str(path), "notebook": notebook, "instructor": instructors[notebook],
                      "sources": sources, "files": files, "timeout": args.timeout, "sandbox": args.sandbox,
                      "feedback": str(args.feedback.resolve()) if args.feedback else None, "env": env,
                      "secret": verdict.new_secret(), "run": verdict.new_secret()})
    return tasks, skipped


def grade_all(tasks: list, args, done: dict) -> list:
    """Grade every task not in ``done`` (submission -> report), ``args.jobs`` at a time, each in a child process
    (``submission.main``); each report appended to OUT/graded.jsonl as it finishes. The reports in task order."""
    from tqdm.auto import tqdm

    from . import submission as child  # it imports this module

    todo = [t for t in tasks if t["submission"] not in done]
    work = Path(tempfile.mkdtemp(prefix="grader-tasks-"))
    guard = tamper.Snapshot(jail.PACKAGE, sorted({args.source / t["notebook"] for t in todo}))
    memory = int(args.memory * 2**30)

    def arguments(i, slot):
        task = dict(todo[i], limits=asdict(jail.limits_for(slot, address_space=memory)),
                    result=str(work / f"{i}.result.json"), package=str(guard.template))
        (work / f"{i}.task.json").write_text(json.dumps(task))
        return ([str(work / f"{i}.task.json")],)

    limit = 300 + args.timeout * (2 + max((len(t["instructor"]["cells"]) for t in todo), default=1))
    children = run_isolated(child.main, arguments, len(todo), args.jobs, limit, preload=[child.__name__])
    with open(args.out / GRADED, "a") as log:
        for i, returncode in tqdm(children, total=len(todo), desc="grading", unit="notebook"):
            report = finished(todo[i], work / f"{i}.result.json", returncode, guard)
            done[todo[i]["submission"]] = report
            log.write(json.dumps(report) + "\n")
            log.flush()
            os.fsync(log.fileno())
    shutil.rmtree(work, ignore_errors=True)
    guard.remove()
    return [done[t["submission"]] for t in tasks]


def finished(task: dict, result: Path, returncode: int, guard) -> dict:
    """A finished child's report; all zero if it died before writing one, or if the instructor's files changed
    while it ran (they are put back)."""
    jail.kill_marked(task["run"])
    path, instructor, notebook = Path(task["submission"]), nbformat.from_dict(task["instructor"]), task["notebook"]
    changed = guard.changed()
    if changed:
        return zero_report(path, instructor, "failed: the submission wrote to the instructor's files: "
                           + ", ".join(changed[:3]), notebook)
    if not result.is_file():
        return zero_report(path, instructor, f"failed: the grading process died (exit code {returncode}): "
                           "the submission killed it, or it ran out of time", notebook)
    return json.loads(result.read_text())


def previous(args) -> dict:
    """The reports already in OUT/graded.jsonl (with --resume; else the file is started afresh)."""
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / GRADED
    if not args.resume or not log.is_file():
        log.write_text("")
        return {}
    reports = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return {r["submission"]: r for r in reports}


def main(argv=None) -> int:
    args = parse_args(argv)
    found = lms.match(collect(args.submissions), args.source)
    tasks, skipped = tasks_of(args, found)
    report = {"notebooks": grade_all(tasks, args, previous(args)), "skipped": skipped}
    print(format_report(report))
    book = gradebook.write_all(report, args.out, args.hand_graded)
    print(book)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
