"""The course website: every lesson as ``course.py run`` executed it, and pages generated from that run (results
with their seed spread, lesson times, the claims checked, the benchmark), built with Sphinx, myst-nb and the
Book theme into ``build/site/``.

    python -m course_utils.instructor.site [--build build] [--out build/site]

Nothing is executed here and nothing is typed: the lessons are the executed notebooks in ``build/``, and each
generated page is written from ``build/results.json``, ``run.json``, ``claims/`` and a benchmark file. The site
loads nothing from another host (MathJax 3 comes from the ``sphinx-mathjax-offline`` package), so it reads offline.
"""
import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from .. import results
from ..paths import course_root, notebooks_dir
from . import colab

LESSONS = "lessons"  # the executed lessons' folder in the site's sources
GENERATED = "generated"  # the generated pages' figures
WIDGET = "application/vnd.jupyter.widget-view+json"
PAGES = ("results", "times", "claims", "benchmark")


# ---------------------------------------------------------------- the lessons


def colab_url(name: str, url: str) -> str:
    """The address that opens notebooks/``name`` of the repository ``url`` in Colab."""
    return re.search(r"\]\(([^)]*)\)$", colab.badge(name, url)).group(1)


def prepare_lesson(nb, name: str, url: str):
    """An executed lesson made ready for the site: widget views dropped (a saved slider cannot move; the course
    runner's ``COURSE_STATIC_PLOTS`` put the static grid beside it) with the widget state, and the Colab badge,
    whose image lives on Google's server, replaced by a local one beside a link to download the notebook."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [out for out in cell.get("outputs", []) if WIDGET not in out.get("data", {})]
        elif cell.cell_type == "markdown":
            cell.source = colab.BADGE_RE.sub("", cell.source)
    nb.metadata.pop("widgets", None)
    links = (f"[![Open in Colab](../_static/colab-badge.svg)]({colab_url(name, url)}) "
             f"{{download}}`Download the notebook <downloads/{name}>` (without outputs; it runs inside the "
             f"course's repository, [{url}]({url}), which holds the helper package and the data)")
    title = next((i for i, cell in enumerate(nb.cells) if cell.cell_type == "markdown"), -1)
    nb.cells.insert(title + 1, _markdown_cell(links))
    return nb


def _markdown_cell(text: str):
    import nbformat

    return nbformat.v4.new_markdown_cell(text, id="lesson-links")


def copy_lessons(build: Path, src: Path, url: str) -> list:
    """Each executed lesson in ``build`` into ``src/lessons`` (prepared), its notebook without outputs into
    ``src/lessons/downloads``; returns the lessons' names, in order."""
    import nbformat

    (src / LESSONS / "downloads").mkdir(parents=True, exist_ok=True)
    names = []
    for executed in sorted(build.glob("[0-9]*.ipynb")):
        nb = prepare_lesson(nbformat.read(executed, as_version=4), executed.name, url)
        nbformat.write(nb, src / LESSONS / executed.name)
        original = notebooks_dir() / executed.name
        shutil.copy(original if original.is_file() else executed, src / LESSONS / "downloads" / executed.name)
        names.append(executed.stem)
    return names


# ---------------------------------------------------------------- the generated pages


def read_run(build: Path) -> dict:
    """What the course runner wrote about the run (``run.json``): mode, machine, each lesson's status and time."""
    path = build / "run.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def read_claims(build: Path) -> dict:
    """``{lesson: [{"text", "held"}, ...]}`` from the claims each lesson's kernel logged (``claims.LOG_ENV``)."""
    return {path.stem: [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
            for path in sorted((build / "claims").glob("*.jsonl"))}


def run_line(run: dict) -> str:
    """One sentence saying which run the page comes from."""
    if not run:
        return "The run that produced these numbers left no `run.json`."
    m = run.get("machine", {})
    return (f"From the **{run.get('mode', '?')}-mode** run of {run.get('started', '?')} on {m.get('cpu', '?')} "
            f"({m.get('cores', '?')} cores; Python {m.get('python', '?')}, torch {m.get('torch', '?')}, "
            f"PML {m.get('pytorch-metric-learning', '?')}), {run.get('jobs', '?')} lessons at a time.")


def lesson_link(lesson: str) -> str:
    return f"[{lesson}]({LESSONS}/{lesson}.ipynb)"


def results_page(everything: dict, run: dict, figures: Path) -> str:
    """The results page: per lesson, its retrieval table (mean ± std over seeds where it trained several), a plot
    of it with the seeds' spread as error bars, and the lesson's other recorded numbers."""
    from ..plotting import results_figure

    failed = sorted(name for name, row in run.get("lessons", {}).items() if row["status"] != "ok")
    lines = ["# Results of the run", "", run_line(run), "",
             *([f"**Failed in this run** (their numbers are missing or partial): {', '.join(failed)}; see the "
                "[lesson times](times.md).", ""] if failed else []),
             "Every number is read from `build/results.json`, which the lessons wrote as they ran; "
             "nothing on this page is typed. A difference smaller than the error bars (or than the course's "
             "noise margin, 0.03) is a tie, as the lessons say.", ""]
    for lesson in sorted(everything):
        table = results.lesson_table(everything[lesson])
        other = {k: v for k, v in everything[lesson].items() if k != "wall_time_s" and not results.ROW.match(k)}
        if not table and not other:
            continue
        lines += [f"## {lesson}", "", f"Lesson: {lesson_link(lesson)}.", ""]
        if table:
            lines += [results.markdown_table(everything, [lesson]), ""]
            figure = results_figure(table, lesson)
            figure.savefig(figures / f"results_{lesson}.png", dpi=90, bbox_inches="tight")
            _close(figure)
            lines += [f"![{lesson}: P@1 and MAP@R per method, seen and unseen classes]"
                      f"({GENERATED}/results_{lesson}.png)", ""]
        if other:
            lines += ["| number | value |", "| --- | --- |"]
            lines += [f"| {name} | {value:g} |" for name, value in sorted(other.items())] + [""]
    return "\n".join(lines)


def _close(figure) -> None:
    import matplotlib.pyplot as plt

    plt.close(figure)


def minutes(seconds: float) -> str:
    """``"3 min 07 s"`` (or ``"41 s"``)."""
    seconds = round(seconds)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def times_page(run: dict) -> str:
    """The lesson times the course runner measured, and the whole run's wall time."""
    lines = ["# Lesson times", "", run_line(run), ""]
    lessons = run.get("lessons", {})
    if not lessons:
        return "\n".join(lines + ["This run recorded no lesson times."])
    lines += ["| lesson | wall time | status |", "| --- | --- | --- |"]
    lines += [f"| {lesson_link(name)} | {minutes(row['wall_time_s'])} | {row['status']} |"
              for name, row in sorted(lessons.items())]
    lines += ["", f"All lessons: **{minutes(run['wall_time_s'])}** of wall time. The capstone (08) runs alone "
              f"first; the others run {run.get('jobs', '?')} at a time, so their times add up to more than the "
              "wall time. A lesson's time includes starting its kernel."]
    return "\n".join(lines)


HELD = {True: "✓ held", False: "✗ **missed**", None: "not checked"}


def claims_page(claimed: dict, run: dict) -> str:
    """Every claim each lesson's text makes about its numbers, and whether it held in this run."""
    counts = {state: sum(c["held"] is state for rows in claimed.values() for c in rows) for state in HELD}
    lines = ["# Claims checked", "", run_line(run), "",
             "Each lesson states its findings in words and checks them on the numbers its cells measured "
             "(`lesson.claim`). In a strict run (`course.py run`, CI) a claim that misses stops the lesson; quick "
             "mode checks none, and a claim about one kind of device's speed is not checked on another.", "",
             f"In this run: {counts[True]} held, {counts[False]} missed, {counts[None]} not checked.", ""]
    for lesson, rows in sorted(claimed.items()):
        lines += [f"## {lesson}", "", f"Lesson: {lesson_link(lesson)}.", "", "| | claim |", "| --- | --- |"]
        lines += [f"| {HELD[row['held']]} | {_cell_text(row['text'])} |" for row in rows] + [""]
    return "\n".join(lines)


def _cell_text(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def benchmark_file(build: Path) -> Path | None:
    """The benchmark to show: ``build/benchmark.json`` if one was run here, else the newest one committed under
    ``benchmarks/results/``."""
    if (build / "benchmark.json").is_file():
        return build / "benchmark.json"
    committed = sorted((course_root() / "benchmarks" / "results").glob("*.json"))
    return committed[-1] if committed else None


def benchmark_page(path: Path | None) -> str:
    """The benchmark's table (``benchmarks/report.py``'s) and the targets it checks, from its JSON file."""
    lines = ["# Benchmark", "", "How fast the course's pipeline trains and embeds against the usual PyTorch "
             "pipeline (`python -m benchmarks.benchmark`; see `benchmarks/`).", ""]
    if path is None:
        return "\n".join(lines + ["No benchmark has been run for this build: `python -m benchmarks.benchmark "
                                  "--out build/benchmark.json` writes one."])
    data = json.loads(path.read_text())
    meta = data.get("meta", {})
    load = meta.get("loadavg_start")
    lines += [f"Measured on {meta.get('date', '?')} on {meta.get('cpu_model', '?')} ({meta.get('device', '?')}, "
              f"{meta.get('threads', '?')} threads; torch {meta.get('torch', '?')}) in "
              f"{minutes(meta.get('elapsed_s', 0))}; load average at the start "
              f"{', '.join(f'{x:.1f}' for x in load) if load else '?'} (file `{path.name}`).", ""]
    targets = data.get("targets", {})
    if targets:
        lines += ["| part | speed-up over the usual pipeline (median) | min–max over rounds | target | met |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {name} | {t['measured']:.2f}× | {t['spread']['min']:.2f}–{t['spread']['max']:.2f}× | "
                  f"{t['target']}× | {'yes' if t['met'] else '**no**'} |" for name, t in targets.items()] + [""]
    sys.path.insert(0, str(course_root()))
    try:
        from benchmarks.report import table
    finally:
        sys.path.pop(0)
    lines += ["Every part, pipeline and search (medians over the rounds):", "", "```text", table(data), "```"]
    return "\n".join(lines)


# ---------------------------------------------------------------- the build


UNUSED_MATHJAX = ("mml-*", "tex-chtml*", "tex-mml-*", "tex-svg-full.js", "node-main.js")  # bundles not loaded


def mathjax_folder() -> Path:
    """MathJax 3 as the ``sphinx-mathjax-offline`` package ships it (a folder named with hyphens, so found by its
    distribution's files rather than imported)."""
    from importlib import metadata

    files = metadata.files("sphinx-mathjax-offline") or []
    script = next((f for f in files if str(f).endswith("static/mathjax/tex-svg.js")), None)
    if script is None:
        raise FileNotFoundError("MathJax is missing: pip install sphinx-mathjax-offline")
    return Path(script.locate()).parent


def write_sources(build: Path, src: Path) -> list:
    """The site's sources in ``src``: docs/ (configuration, landing page, guides), the lessons, the generated
    pages and their figures, and MathJax. Returns the lessons' names."""
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(course_root() / "docs", src)
    shutil.copytree(mathjax_folder(), src / "_static" / "mathjax", ignore=shutil.ignore_patterns(*UNUSED_MATHJAX))
    url = colab.repo_url()
    (src / "course_site.json").write_text(json.dumps({"repository": url}) + "\n")
    names = copy_lessons(build, src, url)
    (src / GENERATED).mkdir()
    run = read_run(build)
    pages = {"results": results_page(results.load(build / "results.json"), run, src / GENERATED),
             "times": times_page(run), "claims": claims_page(read_claims(build), run),
             "benchmark": benchmark_page(benchmark_file(build))}
    for name, text in pages.items():
        (src / f"{name}.md").write_text(text + "\n", encoding="utf-8")
    return names


def build(build: Path | None = None, out: Path | None = None) -> Path:
    """Build the site from the executed lessons in ``build`` (default ``build/``) into ``out`` (default
    ``build/site``); returns its ``index.html``. Sphinx's warnings (a broken link, a missing image) fail it."""
    build = Path(build or course_root() / "build")
    out = Path(out or build / "site")
    if not any(build.glob("[0-9]*.ipynb")):
        raise FileNotFoundError(f"{build} holds no executed lesson: run `python3 course.py run` first")
    src = build / "site-src"
    write_sources(build, src)
    if out.exists():
        shutil.rmtree(out)
    subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-q", "-W", "--keep-going", "-j", "auto",
                    str(src), str(out)], check=True)
    return out / "index.html"


def build_and_tell(build_dir: Path | None = None, out: Path | None = None) -> Path | None:
    """``build``, then say where the site is and how to open it; a failed build is reported and gives None."""
    try:
        index = build(build_dir, out)
    except (subprocess.CalledProcessError, FileNotFoundError) as err:
        print(f"\nThe course website was not built: {err}", file=sys.stderr)
        return None
    print(f"\nCourse website: {index}\n  open it in a browser, or serve it: "
          f"python3 -m http.server --directory {index.parent} 8000  (then http://localhost:8000)")
    return index


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", type=Path, help="the course runner's output (default: build/)")
    parser.add_argument("--out", type=Path, help="default: BUILD/site")
    args = parser.parse_args(argv)
    return 0 if build_and_tell(args.build, args.out) else 1


if __name__ == "__main__":
    sys.exit(main())
