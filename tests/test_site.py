"""The course website: built by the course runner from a quick-mode run of every lesson, served on localhost and
read in a real browser (Debian's Chromium, driven by Playwright), with every request to another host refused.

The browser test needs ``/usr/bin/chromium`` (``COURSE_CHROMIUM`` names another) and the ``playwright`` package;
without them it is skipped, unless ``COURSE_REQUIRE_BROWSER=1`` (CI sets it) makes that a failure."""
import functools
import html
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from course_utils import results
from course_utils.instructor import site

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("COURSE_CHROMIUM", "/usr/bin/chromium")
SCREENSHOT = REPO / "build" / "site-06_m_per_class_sampler.png"


@pytest.fixture(scope="module")
def quick_build(tmp_path_factory):
    """``run_course --quick`` into a temporary folder: every lesson executed in quick mode, then the site built
    (``COURSE_TEST_QUICK_BUILD`` names such a folder to reuse, when working on the site)."""
    if os.environ.get("COURSE_TEST_QUICK_BUILD"):
        return Path(os.environ["COURSE_TEST_QUICK_BUILD"])
    out = tmp_path_factory.mktemp("quick-build")
    env = dict(os.environ, COURSE_QUICK="1")
    done = subprocess.run([sys.executable, "-m", "course_utils.instructor.run_course", "--quick", "--jobs", "1",
                           "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Course website:" in done.stdout
    return out


def lessons() -> list:
    return sorted(path.stem for path in (REPO / "notebooks").glob("[0-9]*.ipynb"))


def table_rows(page: str) -> list:
    """The cells of every row of every table of an HTML page, as text."""
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", page, re.S)
    return [[html.unescape(re.sub(r"<[^>]+>", "", cell)).strip() for cell in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>",
                                                                                         row, re.S)] for row in rows]


def test_the_run_writes_what_the_pages_are_made_of(quick_build):
    run = json.loads((quick_build / "run.json").read_text())
    assert run["mode"] == "quick" and set(run["lessons"]) == set(lessons())
    assert all(row["status"] == "ok" for row in run["lessons"].values())
    logged = site.read_claims(quick_build)
    assert set(logged) <= set(lessons()) and sum(map(len, logged.values())) >= 15
    assert all(row["held"] is None for rows in logged.values() for row in rows)  # quick mode checks none


def test_the_results_page_shows_results_json(quick_build):
    """Every mean ± std of the results page is the one in results.json, and every lesson's table is there."""
    everything = results.load(quick_build / "results.json")
    rows = [row for row in table_rows((quick_build / "site" / "results.html").read_text()) if len(row) == 6]
    shown = {(row[0], row[1]): row[2:] for row in rows if row[0] != "lesson"}
    expected = {}
    for lesson, metrics in everything.items():
        for method, splits in results.lesson_table(metrics).items():
            cells = [results._cell(splits.get(s, {}).get(m), splits.get(s, {}).get(f"{m}_std"))
                     for s, m in results.MARKDOWN_COLUMNS]
            if any(cell != "–" for cell in cells):
                expected[(lesson, method)] = cells
    assert len(expected) >= 30
    assert shown == expected
    figures = list((quick_build / "site" / "_images").glob("results_*.png"))
    assert len(figures) >= 8


def test_the_times_and_claims_pages_show_the_run(quick_build):
    run = json.loads((quick_build / "run.json").read_text())
    times = {row[0]: row[1] for row in table_rows((quick_build / "site" / "times.html").read_text()) if row}
    for lesson, row in run["lessons"].items():
        assert times[lesson] == site.minutes(row["wall_time_s"])
    claims_html = html.unescape(re.sub(r"<[^>]+>", "", (quick_build / "site" / "claims.html").read_text()))
    for rows in site.read_claims(quick_build).values():
        for row in rows:
            assert " ".join(row["text"].split()) in " ".join(claims_html.split())


def test_every_claim_of_the_notebooks_is_on_the_claims_page(quick_build):
    from test_notebooks import claims_in_notebooks

    page = " ".join(html.unescape(re.sub(r"<[^>]+>", "", (quick_build / "site" / "claims.html").read_text())).split())
    missing = [(lesson, text) for lesson, text in claims_in_notebooks() if " ".join(text.split()) not in page]
    assert not missing


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served(quick_build):
    """The built site on http://127.0.0.1:PORT, for the module's tests."""
    handler = functools.partial(QuietHandler, directory=str(quick_build / "site"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through Playwright; skipped without them unless ``COURSE_REQUIRE_BROWSER=1``."""
    missing = [what for what, ok in (("playwright", _importable("playwright")),
                                     (CHROMIUM, Path(CHROMIUM).is_file() or shutil.which(CHROMIUM))) if not ok]
    if missing:
        reason = f"the browser test needs {' and '.join(missing)} (apt-get install chromium; pip install playwright)"
        if os.environ.get("COURSE_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


class Visit:
    """One page loaded in a fresh tab, with what went wrong on the way: console errors, uncaught exceptions,
    failed responses, and requests to any other host (refused: the site must read offline)."""

    def __init__(self, browser, base: str, path: str):
        self.problems = []
        self.page = browser.new_page()
        self.page.route("**/*", self._only_local(base))
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"exception: {e}"))
        self.page.on("response", lambda r: r.status >= 400 and self.problems.append(f"{r.status}: {r.url}"))
        self.page.goto(f"{base}/{path}", wait_until="load")

    def _only_local(self, base: str):
        def route(r):
            if r.request.url.startswith(base):
                r.continue_()
            else:
                self.problems.append(f"request to another host: {r.request.url}")
                r.abort()
        return route


def site_pages(root: Path) -> list:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.html") if "_static" not in p.parts)


def broken_links(root: Path, page: str, hrefs: list) -> list:
    """The links of ``page`` to files of the site that do not exist, or to an anchor the target does not have."""
    broken = []
    for href in hrefs:
        parts = urlsplit(href)
        if parts.scheme in ("http", "https", "mailto") and not parts.netloc.startswith("127.0.0.1"):
            continue  # another site: not followed offline
        target = (root / page).parent / unquote(parts.path) if parts.path else root / page
        target = target.resolve()
        if not target.is_file():
            broken.append(href)
        elif parts.fragment and target.suffix == ".html" and f'id="{parts.fragment}"' not in target.read_text():
            broken.append(href)
    return broken


def test_every_page_loads_offline_with_its_images_and_links(quick_build, served, browser):
    root = quick_build / "site"
    pages = site_pages(root)
    assert {f"lessons/{name}.html" for name in lessons()} <= set(pages)
    for path in pages:
        visit = Visit(browser, served, path)
        images = visit.page.eval_on_selector_all("img", "els => els.map(e => [e.src, e.complete && e.naturalWidth])")
        visit.problems += [f"image not shown: {src}" for src, ok in images if not ok]
        hrefs = visit.page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))")
        visit.problems += [f"broken link: {href}" for href in broken_links(root, path, hrefs)]
        visit.page.close()
        assert not visit.problems, f"{path}: {visit.problems}"


def test_every_lesson_page_shows_its_figures(quick_build, served, browser):
    import nbformat

    for name in lessons():
        nb = nbformat.read(quick_build / f"{name}.ipynb", as_version=4)
        figures = sum("image/png" in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
                      for out in cell.get("outputs", []))
        visit = Visit(browser, served, f"lessons/{name}.html")
        shown = visit.page.eval_on_selector_all(".cell_output img", "els => els.filter(e => e.naturalWidth > 0).length")
        title = visit.page.title()
        visit.page.close()
        assert figures >= 1 and shown == figures, f"{name}: {shown} of {figures} figures shown"
        assert "Lesson" in title


def test_search_finds_a_term_of_lesson_06(served, browser):
    visit = Visit(browser, served, "search.html?q=MPerClassSampler")
    visit.page.wait_for_selector("#search-results li a", timeout=30_000)
    found = visit.page.eval_on_selector_all("#search-results li a", "els => els.map(e => e.getAttribute('href'))")
    visit.page.close()
    assert any("06_m_per_class_sampler" in href for href in found), found
    assert not visit.problems


def test_math_renders_and_a_lesson_page_is_photographed(served, browser):
    visit = Visit(browser, served, "lessons/06_m_per_class_sampler.html")
    visit.page.wait_for_function("document.querySelectorAll('mjx-container svg').length > 5", timeout=60_000)
    errors = visit.page.eval_on_selector_all("mjx-merror, [data-mjx-error]", "els => els.length")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    visit.page.set_viewport_size({"width": 1280, "height": 900})
    visit.page.screenshot(path=str(SCREENSHOT))
    visit.page.close()
    assert errors == 0 and not visit.problems, visit.problems
    assert SCREENSHOT.stat().st_size > 10_000


def test_a_lesson_is_prepared_for_the_site():
    """Widget views (a saved slider cannot move) and the widget state go; the Colab badge's remote image gives way
    to the local one, beside a link to the notebook without outputs."""
    import nbformat

    url = "https://github.com/someone/course"
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Lesson 01\n\n" + site.colab.badge("01_x.ipynb", url)),
        nbformat.v4.new_code_cell("slider", outputs=[
            nbformat.v4.new_output("display_data", {site.WIDGET: {"model_id": "1"}, "text/plain": "IntSlider()"}),
            nbformat.v4.new_output("display_data", {"image/png": "iVBORw0KGgo="})])])
    nb.metadata["widgets"] = {"state": {}}
    nb = site.prepare_lesson(nb, "01_x.ipynb", url)
    assert [list(out["data"]) for out in nb.cells[2].outputs] == [["image/png"]]
    assert "widgets" not in nb.metadata and "colab.research.google.com/assets" not in nb.cells[0].source
    links = nb.cells[1].source
    assert "../_static/colab-badge.svg" in links and "<downloads/01_x.ipynb>" in links
    assert "colab.research.google.com/github/someone/course/blob/main/notebooks/01_x.ipynb" in links


def test_minutes():
    assert [site.minutes(s) for s in (41.4, 60, 187.6)] == ["41 s", "1 min 00 s", "3 min 08 s"]


def test_the_site_command_says_when_there_is_no_run(tmp_path, capsys):
    assert site.main(["--build", str(tmp_path)]) == 1
    assert "no executed lesson" in capsys.readouterr().err
