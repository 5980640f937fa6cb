"""The prose-number check: quoted metrics must be printed by the run, written in code, or marked approximate."""
from pathlib import Path

import nbformat
import pytest

from course_utils.instructor import prose
from course_utils.paths import course_root

v4 = nbformat.v4


def notebook(markdown: str, printed: str = "", code: str = "print(table)"):
    out = v4.new_output("stream", text=printed)
    return v4.new_notebook(cells=[v4.new_code_cell(code, outputs=[out]), v4.new_markdown_cell(markdown)])


def unbacked(markdown, printed="", code="print(table)"):
    return [p.number for p in prose.check(notebook(markdown, printed, code))]


def test_a_printed_number_passes_at_the_prose_precision():
    assert unbacked("MAP@R reaches 0.452 here.", "map_r 0.4523\n") == []
    assert unbacked("MAP@R reaches 0.45 here.", "map_r 0.4523\n") == []
    assert unbacked("MAP@R reaches 0.452 here.", "map_r 0.45\n") == ["0.452"]  # less precise output: no


def test_another_runs_number_is_reported():
    assert unbacked("MAP@R 0.810 over all classes, 0.410 ± 0.013.", "map_r 0.8049\n0.41 0.013") == ["0.810", "0.410"]


def test_sign_aside_a_difference_matches():
    assert unbacked("ahead by 0.041, and −0.052 on unseen", "+0.041 -0.052") == []


def test_approximate_numbers_and_non_prose_are_not_checked():
    text = ("about 0.45, ≈ 0.31, roughly 0.2, ~0.66; `margin=0.05`; $\\gamma = 0.25$; "
            "[paper](https://arxiv.org/abs/1708.07747); arXiv:1708.07747; noise 0.03; 2 epochs, 0.5 lr")
    assert unbacked(text) == []


def test_settings_written_in_code_pass():
    assert unbacked("with a margin of 0.05", code="loss = ContrastiveLoss(neg_margin=0.05)") == []


def test_html_tables_count_as_printed():
    out = v4.new_output("execute_result", data={"text/html": "<td>0.7029</td>", "text/plain": "..."})
    nb = v4.new_notebook(cells=[v4.new_code_cell("table", outputs=[out]), v4.new_markdown_cell("MAP@R 0.703")])
    assert prose.check(nb) == []


BUILT = sorted((course_root() / "build").glob("[0-9]*.ipynb"))


@pytest.mark.skipif(not BUILT, reason="no executed notebooks in build/ (python3 course.py run writes them)")
@pytest.mark.parametrize("path", BUILT, ids=lambda p: p.name)
def test_the_last_full_runs_prose_is_backed_by_its_outputs(path: Path):
    nb = nbformat.read(path, as_version=4)
    if nb.metadata.get("course_run", {}).get("quick", True):
        pytest.skip("a quick-mode run: its numbers are not the ones the text discusses")
    problems = prose.check(nb, path.name)
    assert not problems, "\n".join(map(str, problems))
