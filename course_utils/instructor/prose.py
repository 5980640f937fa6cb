"""Prose that survives a rerun: every metric-like number a lesson's text quotes must be printed by that run.

    python -m course_utils.instructor.prose build/*.ipynb

A number in a markdown cell with two or more decimals (``0.452``, ``+0.041``, ``0.410 ± 0.013``) is a measurement
the reader will compare with their screen. It passes when an output of the same executed notebook prints it (to
the prose's precision, sign aside: "ahead by 0.041" matches a printed ``+0.041``), when a code cell of the
notebook writes it (a setting such as ``margin=0.05``), when it is the course's noise margin (0.03), or when the
text marks it as approximate ("about 0.45", "≈ 0.45", "~0.45"), a precision it keeps on another machine. Inline
code, math and links are not prose.
"""
import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

from ..claims import NOISE

NUMBER = re.compile(r"(?<![\w.])[+\-−]?\d*\.\d+(?![\w.])")
METRIC_LIKE = re.compile(r"\.\d{2,}$")
NOT_PROSE = re.compile(r"`[^`]*`|\$\$.*?\$\$|\$[^$]*\$|\]\([^)]*\)|https?://\S+|arXiv:\S+|<[^>]*>", re.S)
APPROXIMATE = re.compile(r"(about|around|roughly|approximately|nearly|almost|close to|near|≈|~|∼|some)\s*[+\-−]?$",
                         re.I)


@dataclass(frozen=True)
class Unbacked:
    """A number the text quotes that this run did not print."""

    notebook: str
    cell: int
    number: str
    context: str

    def __str__(self):
        return f"{self.notebook} cell {self.cell}: {self.number!r} in “…{self.context}…”"


def _value(token: str) -> float:
    return abs(float(token.replace("−", "-")))


def _decimals(token: str) -> int:
    return len(token.split(".")[1])


def printed_text(nb) -> str:
    """Everything the run printed or displayed as text (streams, results, HTML tables), and its code."""
    parts = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        parts.append(cell.source)
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
            for mime in ("text/plain", "text/html", "text/markdown"):
                value = out.get("data", {}).get(mime)
                if value:
                    parts.append(value if isinstance(value, str) else "".join(value))
    return "\n".join(parts)


CONSTANTS = (NOISE,)  # the course's own rule, which every lesson may quote


def backed(token: str, printed: list) -> bool:
    """Whether ``printed`` (number tokens) holds ``token``'s value at ``token``'s precision."""
    value, places = _value(token), _decimals(token)
    return value in CONSTANTS or any(round(_value(p), places) == round(value, places)
                                     for p in printed if _decimals(p) >= places)


def quoted_numbers(markdown: str):
    """``(token, context)`` of every metric-like number of a markdown cell's prose, not marked approximate."""
    prose = NOT_PROSE.sub(lambda m: " " * len(m.group()), markdown)
    for match in NUMBER.finditer(prose):
        token = match.group()
        if not METRIC_LIKE.search(token) or APPROXIMATE.search(prose[max(0, match.start() - 20):match.start()]):
            continue
        context = " ".join(prose[max(0, match.start() - 40):match.end() + 20].split())
        yield token, context


def check(nb, name: str = "notebook") -> list:
    """The ``Unbacked`` numbers of an executed notebook's markdown cells."""
    printed = NUMBER.findall(printed_text(nb))
    return [Unbacked(name, i, token, context)
            for i, cell in enumerate(nb.cells) if cell.cell_type == "markdown"
            for token, context in quoted_numbers(cell.source) if not backed(token, printed)]


def check_files(paths) -> list:
    return [problem for path in paths for problem in check(nbformat.read(path, as_version=4), Path(path).name)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="+", type=Path, help="executed notebooks (build/*.ipynb)")
    problems = check_files(parser.parse_args(argv).notebooks)
    for problem in problems:
        print(problem)
    print(f"{len(problems)} number(s) in the prose that the run did not print.")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
