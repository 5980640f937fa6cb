"""Student copies of the notebooks: solutions replaced by a stub, hidden tests removed, outputs cleared.

    python -m course_utils.instructor.assign OUT_DIR [NOTEBOOK ...]     # default: every notebooks/*.ipynb
"""
import argparse
import sys
from pathlib import Path

import nbformat

from ..paths import notebooks_dir

BEGIN_SOLUTION, END_SOLUTION = "# BEGIN SOLUTION", "# END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
MARKDOWN_STUB = "YOUR ANSWER HERE"


def grading(cell) -> dict:
    """A cell's nbgrader metadata (empty if it has none)."""
    return cell.get("metadata", {}).get("nbgrader", {})


def _replace_regions(source: str, begin: str, end: str, replacement) -> str:
    """Replace each region from a ``begin`` line to an ``end`` line (inclusive) by ``replacement(indent)`` lines."""
    out, indent, inside = [], None, False
    for line in source.split("\n"):
        marker = line.strip()
        if marker == begin and not inside:
            inside, indent = True, line[: len(line) - len(line.lstrip())]
            out += [indent + r for r in replacement]
        elif marker == end and inside:
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"'{begin}' without a matching '{end}' in:\n{source}")
    return "\n".join(out)


def strip_solution(source: str, markdown: bool = False) -> str:
    """The student version of a solution cell's source."""
    if markdown:
        return MARKDOWN_STUB
    if BEGIN_SOLUTION not in source:
        return "\n".join(STUB)
    return _replace_regions(source, BEGIN_SOLUTION, END_SOLUTION, STUB)


def strip_hidden_tests(source: str) -> str:
    """A check cell's source without its hidden tests."""
    return _replace_regions(source, BEGIN_HIDDEN, END_HIDDEN, ()).rstrip("\n")


def student_notebook(nb):
    """A copy of an instructor notebook for students: every other cell unchanged."""
    nb = nbformat.from_dict(nb)
    for cell in nb.cells:
        meta = grading(cell)
        if meta.get("solution"):
            cell.source = strip_solution(cell.source, markdown=cell.cell_type == "markdown")
        if meta.get("grade"):
            cell.source = strip_hidden_tests(cell.source)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


def find_notebook(name: Path) -> Path:
    """A notebook given by path, or by bare name in the course's notebooks/ folder."""
    if name.is_file():
        return name
    if (notebooks_dir() / name).is_file():
        return notebooks_dir() / name
    raise SystemExit(f"No notebook {name}: give a path, or a name from {notebooks_dir()}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args(argv)
    notebooks = [find_notebook(n) for n in args.notebooks] or sorted(notebooks_dir().glob("[0-9]*.ipynb"))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for path in notebooks:
        student = student_notebook(nbformat.read(path, as_version=4))
        nbformat.write(student, args.out_dir / path.name)
        exercises = sum(bool(grading(c).get("solution")) for c in student.cells)
        print(f"{path.name}: {exercises} exercise(s) -> {args.out_dir / path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
