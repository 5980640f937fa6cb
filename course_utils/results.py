"""The headline results of each lesson, collected in ``build/results.json`` by the course runner."""
import json
import os
import re
import sys
from pathlib import Path

from filelock import FileLock

RESULTS_ENV = "COURSE_RESULTS"


def results_path():
    """Where ``record`` writes: ``$COURSE_RESULTS`` (the runner sets it), else nowhere (None)."""
    path = os.environ.get(RESULTS_ENV)
    return Path(path) if path else None


def load(path) -> dict:
    """``{lesson: {metric: value}}`` from a results file; empty if there is none yet."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else {}


def flatten(table: dict, prefix: str = "") -> dict:
    """``{method: {split: {metric: value}}}`` (any depth) as ``{"method split metric": value}``."""
    flat = {}
    for key, value in table.items():
        name = f"{prefix} {key}".strip()
        flat.update(flatten(value, name) if isinstance(value, dict) else {name: value})
    return flat


class Recorded(dict):
    """The numbers ``record`` wrote: a dict that a notebook shows as one line, not as a screenful of keys."""

    def __init__(self, metrics: dict, lesson: str, path):
        super().__init__(metrics)
        self.lesson, self.path = lesson, path

    def __repr__(self):
        where = f"in {self.path}" if self.path else "(no results file is set: the course runner sets one)"
        return f"Recorded {len(self)} numbers of {self.lesson} {where}"

    __str__ = __repr__

    def _repr_pretty_(self, printer, cycle):
        printer.text(repr(self))


def record(lesson: str, metrics: dict, path=None) -> dict:
    """Merge ``metrics`` into the lesson's entry of the results file (if one is set) and return them, rounded.

    ``metrics`` is flat (``{name: value}``) or a results table (``{method: {split: metrics}}``), flattened here.
    Lessons running at once (``run_course --jobs``) take turns: the read, merge and write hold a lock file."""
    metrics = {name: round(float(value), 4) for name, value in flatten(metrics).items()}
    path = Path(path) if path else results_path()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{path}.lock"):
            everything = load(path)
            everything.setdefault(lesson, {}).update(metrics)
            path.write_text(json.dumps(everything, indent=2, sort_keys=True) + "\n")
    return Recorded(metrics, lesson, path)


def format_table(everything: dict) -> str:
    """The results as a plain-text table: lesson, metric, value."""
    rows = [(lesson, name, f"{value:g}") for lesson, metrics in sorted(everything.items())
            for name, value in sorted(metrics.items())]
    widths = [max(len(r[i]) for r in rows + [("lesson", "metric", "value")]) for i in range(3)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(("lesson", "metric", "value"), widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


ROW = re.compile(r"^(?P<method>.+) (?P<split>seen|unseen|rare) (?P<metric>p1|map_r)(?P<std>_std)?$")
MARKDOWN_COLUMNS = (("seen", "p1"), ("seen", "map_r"), ("unseen", "p1"), ("unseen", "map_r"))


def lesson_table(metrics: dict) -> dict:
    """A lesson's recorded retrieval numbers back as a results table, ``{method: {split: {metric: mean,
    f"{metric}_std": std}}}`` (the std where the lesson recorded one): the shape the lessons print and plot."""
    table = {}
    for name, value in metrics.items():
        match = ROW.match(name)
        if match:
            row = table.setdefault(match["method"], {}).setdefault(match["split"], {})
            row[match["metric"] + (match["std"] or "")] = value
    return table


def markdown_table(everything: dict, lessons=None, columns=MARKDOWN_COLUMNS) -> str:
    """A Markdown table of the lessons' retrieval results (the course website's results page shows it per lesson):
    one row per lesson and method with a value in ``columns``, a mean ± std where the lesson recorded a spread."""
    from .evaluation import DISPLAY_NAMES  # here, not at the top: the course runner imports this module without torch

    rows = []
    for lesson in lessons or sorted(everything):
        for method, splits in sorted(lesson_table(everything.get(lesson, {})).items()):
            values = [(splits.get(split, {}).get(metric), splits.get(split, {}).get(f"{metric}_std"))
                      for split, metric in columns]
            if any(mean is not None for mean, _ in values):
                rows.append(f"| {lesson} | {method} | " + " | ".join(_cell(*value) for value in values) + " |")
    names = [f"{split} {DISPLAY_NAMES[metric]}" for split, metric in columns]
    header = "| lesson | embedding | " + " | ".join(names) + " |"
    return "\n".join([header, "| " + " | ".join(["---"] * (len(columns) + 2)) + " |", *rows])


def _cell(mean, std) -> str:
    if mean is None:
        return "–"
    return f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"


if __name__ == "__main__":  # python -m course_utils.results build/results.json [LESSON ...]
    print(markdown_table(load(sys.argv[1]), sys.argv[2:] or None))
