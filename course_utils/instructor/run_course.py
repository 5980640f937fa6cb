"""Run the whole course: execute every notebook, save it and an HTML copy under build/, print the results, and
build the course website from them in build/site/.

    python -m course_utils.instructor.run_course [--quick] [--out build] [--jobs 2] [--no-site] [NOTEBOOK ...]

What the run measured is written beside the notebooks, for the website's generated pages: ``results.json`` (each
lesson's headline numbers and wall time), ``run.json`` (the mode, the machine, each lesson's status and time) and
``claims/NAME.jsonl`` (every claim a lesson checked, and whether it held).

Notebooks run --jobs at a time, each in its own kernel, in lesson order, after the capstone, which runs alone. A
lesson that needs a training run another lesson is computing (04 reuses 02's contrastive and 03's triplet runs)
waits for it in ``lesson.cached``: no run is trained twice.
"""
import argparse
import datetime
import json
import os
import platform
import re
import sys
import time
from importlib import metadata
from pathlib import Path

from .. import claims, results
from ..paths import course_root, notebooks_dir
from . import prose, site
from .workers import run_all

QUIET_KERNEL = ["--IPKernelApp.log_level=ERROR"]  # no start-up warnings from each kernel in the output


ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the colours of a traceback's text
PROGRESS_BAR = re.compile(r"\d+%\|")  # tqdm's text: "epochs:   0%|          | 0/3 [00:00<?, ?it/s]"


def drop_progress_bars(nb) -> None:
    """Remove tqdm's progress-bar widgets from an executed notebook: saved, they show the state they were drawn in
    ("0%"), not where they ended."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [out for out in cell.get("outputs", [])
                            if not ("application/vnd.jupyter.widget-view+json" in out.get("data", {})
                                    and PROGRESS_BAR.search(str(out["data"].get("text/plain", ""))))]


def claims_file(out_dir: Path, notebook: Path) -> Path:
    """Where a lesson's kernel logs its claims (``claims.LOG_ENV``): ``out_dir/claims/NAME.jsonl``."""
    return out_dir / "claims" / f"{notebook.stem}.jsonl"


def execute(notebook: Path, out_dir: Path, timeout: int = 1800):
    """Execute one notebook in a fresh kernel (cwd notebooks/); write NAME.ipynb and NAME.html to out_dir, and
    its claims to ``claims_file``."""
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    nb = nbformat.read(notebook, as_version=4)
    log = claims_file(out_dir, notebook)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", extra_arguments=QUIET_KERNEL,
                       resources={"metadata": {"path": str(notebook.parent)}}).execute(
            env=dict(os.environ, **{claims.LOG_ENV: str(log)}))
    finally:  # a notebook that failed is written too, up to the failing cell, so that its error can be read
        drop_progress_bars(nb)
        nb.metadata["course_run"] = {"quick": os.environ.get("COURSE_QUICK") == "1"}  # which numbers its text can quote
        nbformat.write(nb, out_dir / notebook.name)
        html, _ = HTMLExporter().from_notebook_node(nb)
        (out_dir / notebook.with_suffix(".html").name).write_text(html, encoding="utf-8")


def run_one(notebook: Path, out_dir: Path) -> tuple:
    """``execute`` one notebook; returns ``(seconds, status)``, status ``"ok"`` or ``"FAILED: ..."``, the error."""
    print(f"  {notebook.name:<32} started", flush=True)
    start = time.perf_counter()
    try:
        execute(notebook, out_dir)
        status = "ok"
    except Exception as err:  # reported, and the other lessons carry on
        status = f"FAILED: {failure(err)}"
    return time.perf_counter() - start, status


def failure(err: Exception) -> str:
    """What went wrong, in one line without colours: for a failed cell, the cell's exception and its message
    (``AssertionError: The lesson claims ...``); else the last line of the error's text."""
    if getattr(err, "ename", None):  # nbclient's CellExecutionError
        text = f"{err.ename}: {err.evalue}" if err.evalue else err.ename
    else:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        text = f"{type(err).__name__}: {lines[-1] if lines else ''}"
    return " ".join(ANSI.sub("", text).split())[:300]


ALONE = ("08_capstone_benchmark",)  # the longest lesson: 6 min with both cores, about 13 min beside another


def batches(notebooks: list, jobs: int) -> list:
    """``[(notebooks, jobs), ...]``: the capstone first, alone with both cores, then the rest ``jobs`` at a time in
    lesson order (lessons that share a run, 02-04, stay in order). Beside another kernel the capstone's long
    training runs at less than half its speed alone, far more than the other lessons lose, so giving it the
    machine first shortens the whole run (measured on 2 cores: about 19 min against 21) and keeps it under
    10 minutes."""
    alone = [nb for nb in notebooks if nb.stem in ALONE]
    rest = [nb for nb in notebooks if nb.stem not in ALONE]
    return [(group, n) for group, n in ((alone, 1), (rest, jobs)) if group]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebooks/*.ipynb")
    parser.add_argument("--quick", action="store_true", help="quick mode (small data, few epochs)")
    parser.add_argument("--out", type=Path, help="default: build/ in the course folder")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="notebooks run at once (default: 2, or 1 on a single core)")
    parser.add_argument("--no-site", action="store_true", help="do not build the course website afterwards")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    args.out = args.out or course_root() / "build"
    notebooks = [nb.resolve() for nb in args.notebooks or sorted(notebooks_dir().glob("[0-9]*.ipynb"))]
    args.out.mkdir(parents=True, exist_ok=True)
    results_file = (args.out / "results.json").resolve()
    results_file.unlink(missing_ok=True)
    os.environ.update({"COURSE_QUICK": "1" if args.quick else "0", results.RESULTS_ENV: str(results_file),
                       claims.STRICT_ENV: "1",  # a claim its own run contradicts fails the lesson
                       "COURSE_STATIC_PLOTS": "1"})  # the saved HTML copies cannot run sliders
    print(f"Running {len(notebooks)} notebooks in {'quick' if args.quick else 'full'} mode, {args.jobs} at a time "
          f"-> {args.out}/", flush=True)
    start, failed = time.perf_counter(), []
    run = {"mode": "quick" if args.quick else "full", "jobs": args.jobs, "started": now(), "machine": machine(),
           "lessons": {}}
    for group, jobs in batches(notebooks, args.jobs):
        for i, (seconds, status) in run_all(run_one, [(nb, args.out) for nb in group], jobs):
            if status != "ok":
                failed.append(group[i].name)
            results.record(group[i].stem, {"wall_time_s": seconds}, results_file)
            run["lessons"][group[i].stem] = {"wall_time_s": round(seconds, 1), "status": status}
            print(f"  {group[i].name:<32} {seconds:7.1f} s  {status}", flush=True)
    run.update(wall_time_s=round(time.perf_counter() - start, 1), finished=now())
    (args.out / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    print(f"\nAll notebooks: {run['wall_time_s']:.0f} s of wall time.")
    print("\nHeadline results (also in " + str(results_file) + "):\n")
    print(results.format_table(results.load(results_file)))
    unbacked = [] if args.quick else check_prose(args.out, notebooks, failed)
    no_site = not args.no_site and site.build_and_tell(args.out) is None
    if failed:
        print(f"\n{len(failed)} notebook(s) failed: {', '.join(sorted(failed))}", file=sys.stderr)
    return 1 if failed or unbacked or no_site else 0


def now() -> str:
    """The time of day, to the second, with its time zone."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def machine() -> dict:
    """What the run's numbers and times depend on, read without importing torch (the runner never does)."""
    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                if line.startswith("model name")), platform.processor() or platform.machine())
    versions = {}
    for name in ("torch", "pytorch-metric-learning", "faiss-cpu"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "system": platform.platform(terse=True),
            "python": platform.python_version(), **versions}


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def check_prose(out_dir: Path, notebooks: list, failed: list) -> list:
    """Every metric the lessons' text quotes must be printed by this run (``prose``); print those that are not."""
    done = [out_dir / nb.name for nb in notebooks if nb.name not in failed]
    unbacked = prose.check_files(done)
    print(f"\nProse numbers: {len(unbacked)} of the numbers the lessons' text quotes were not printed by this run"
          + (":" if unbacked else "."), file=sys.stderr if unbacked else sys.stdout)
    for problem in unbacked:
        print(f"  {problem}", file=sys.stderr)
    return unbacked


if __name__ == "__main__":
    sys.exit(main())
