"""Run the whole course: execute every notebook, save it and an HTML copy under build/, print the results.

    python -m course_utils.instructor.run_course [--quick] [--out build] [NOTEBOOK ...]
"""
import argparse
import os
import sys
import time
from pathlib import Path

from .. import results
from ..paths import course_root, notebooks_dir

QUIET_KERNEL = ["--IPKernelApp.log_level=ERROR"]  # no start-up warnings from each kernel in the output


def execute(notebook: Path, out_dir: Path, timeout: int = 1800):
    """Execute one notebook in a fresh kernel (cwd notebooks/); write NAME.ipynb and NAME.html to out_dir."""
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    nb = nbformat.read(notebook, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", extra_arguments=QUIET_KERNEL,
                   resources={"metadata": {"path": str(notebook.parent)}}).execute()
    nbformat.write(nb, out_dir / notebook.name)
    html, _ = HTMLExporter().from_notebook_node(nb)
    (out_dir / notebook.with_suffix(".html").name).write_text(html, encoding="utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebooks/*.ipynb")
    parser.add_argument("--quick", action="store_true", help="quick mode (small data, few epochs)")
    parser.add_argument("--out", type=Path, help="default: build/ in the course folder")
    args = parser.parse_args(argv)
    args.out = args.out or course_root() / "build"
    notebooks = args.notebooks or sorted(notebooks_dir().glob("[0-9]*.ipynb"))
    args.out.mkdir(parents=True, exist_ok=True)
    results_file = (args.out / "results.json").resolve()
    results_file.unlink(missing_ok=True)
    os.environ.update({"COURSE_QUICK": "1" if args.quick else "0", results.RESULTS_ENV: str(results_file),
                       "COURSE_STATIC_PLOTS": "1"})  # the saved HTML copies cannot run sliders
    print(f"Running {len(notebooks)} notebooks in {'quick' if args.quick else 'full'} mode -> {args.out}/",
          flush=True)
    failed = []
    for notebook in notebooks:
        start = time.perf_counter()
        try:
            execute(notebook.resolve(), args.out)
            status = "ok"
        except Exception as err:  # report and carry on with the other lessons
            failed.append(notebook.name)
            status = f"FAILED: {type(err).__name__}: {str(err).strip().splitlines()[-1][:200]}"
        seconds = time.perf_counter() - start
        results.record(notebook.stem, {"wall_time_s": seconds}, results_file)
        print(f"  {notebook.name:<32} {seconds:7.1f} s  {status}", flush=True)
    print("\nHeadline results (also in " + str(results_file) + "):\n")
    print(results.format_table(results.load(results_file)))
    if failed:
        print(f"\n{len(failed)} notebook(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
