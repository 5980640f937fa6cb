"""What grading hands in: ``grades.csv`` (a row per student, a column per exercise, lesson totals, max points in
the second row; hand-graded points merged in), ``lms.csv`` (Canvas's gradebook import layout: one column per lesson
and a "Points Possible" row; Moodle imports it too, mapping "SIS Login ID"), and the class report: per exercise,
how many passed and how often each mistake was made, as a table and as an HTML page with a bar chart per exercise."""
import csv
import html
from collections import Counter, defaultdict
from pathlib import Path

from .lms import student
from .mistakes import mistake_text

MAX_ROW = "max points"


def cells(report: dict) -> tuple:
    """``({student: {(lesson, grade_id): points}}, {(lesson, grade_id): max points})`` of the graded checks and
    the written answers (whose max is what they are worth)."""
    points, maxima = defaultdict(dict), {}
    for nb in report["notebooks"]:
        who = student(nb["submission"], nb["notebook"])
        for row in nb["exercises"]:
            key = (nb["notebook"], row["grade_id"])
            maxima[key] = row.get("worth", row["max_points"])
            points[who][key] = row["points"]
    return points, maxima


def merge_hand_graded(points: dict, maxima: dict, path) -> None:
    """Add the points of a CSV filled in by hand (columns student, grade_id, points) to the written answers."""
    if path is None:
        return
    by_id = {grade_id: key for key in maxima for grade_id in [key[1]]}
    with open(path, newline="") as f:
        for line in csv.DictReader(f):
            key = by_id.get(line["grade_id"])
            if key is None:
                raise SystemExit(f"{path}: no exercise {line['grade_id']!r} in the graded notebooks")
            points[line["student"]][key] = min(float(line["points"]), maxima[key])


def table(points: dict, maxima: dict) -> list:
    """The rows of grades.csv: header, max points, then one per student."""
    keys = sorted(maxima)
    lessons = sorted({lesson for lesson, _ in keys})
    header = ["student", *[f"{Path(lesson).stem}:{grade_id}" for lesson, grade_id in keys],
              *[f"{Path(lesson).stem}:total" for lesson in lessons], "total"]

    def row(name, values):
        totals = [sum(values.get(k, 0) for k in keys if k[0] == lesson) for lesson in lessons]
        return [name, *[values.get(k, 0) for k in keys], *totals, sum(totals)]

    return [header, row(MAX_ROW, maxima), *[row(name, points[name]) for name in sorted(points)]]


def write_csv(rows: list, path: Path) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def lms_rows(rows: list) -> list:
    """Canvas's import layout from grades.csv's rows: Student, SIS Login ID, one column per lesson total."""
    totals = [i for i, name in enumerate(rows[0]) if name.endswith(":total")]
    header = ["Student", "SIS Login ID", *[rows[0][i].removesuffix(":total") for i in totals]]
    possible = ["Points Possible", "", *[rows[1][i] for i in totals]]
    return [header, possible, *[[r[0], r[0], *[r[i] for i in totals]] for r in rows[2:]]]


def class_summary(report: dict) -> dict:
    """``{(lesson, grade_id): {"students", "passed", "mistakes": Counter(code), "texts": {code: words}}}``."""
    summary = {}
    for nb in report["notebooks"]:
        for row in nb["exercises"]:
            if row["status"].startswith("written answer"):
                continue
            entry = summary.setdefault((nb["notebook"], row["grade_id"]),
                                       {"students": 0, "passed": 0, "mistakes": Counter(), "texts": {}})
            entry["students"] += 1
            entry["passed"] += row["status"] == "passed"
            if row["status"] != "passed":
                entry["mistakes"][row["mistake"]] += 1
                entry["texts"].setdefault(row["mistake"], mistake_text(row["status"])[:120])
    return summary


def class_text(summary: dict) -> str:
    """The class report as a terminal table."""
    lines = [f"{'exercise':<40}{'passed':>10}  mistakes (code: count of students, what)"]
    for (lesson, grade_id), entry in sorted(summary.items()):
        lines.append(f"{Path(lesson).stem[:2] + ':' + grade_id:<40}{entry['passed']:>4} of {entry['students']:<3}")
        for code, count in entry["mistakes"].most_common():
            lines.append(f"{'':<42}{code}: {count} of {entry['students']}: {entry['texts'][code]}")
    return "\n".join(lines)


def bar_chart(entry: dict) -> str:
    """An inline SVG: one bar for the students who passed, one per mistake code."""
    bars = [("passed", entry["passed"]), *entry["mistakes"].most_common()]
    width = 360
    out = [f'<svg width="{width + 120}" height="{22 * len(bars)}">']
    for i, (label, count) in enumerate(bars):
        length = width * count / max(entry["students"], 1)
        color = "#4a9" if label == "passed" else "#d75"
        out.append(f'<text x="0" y="{22 * i + 15}" font-size="12">{html.escape(label)}</text>'
                   f'<rect x="80" y="{22 * i + 3}" width="{length:.1f}" height="16" fill="{color}"/>'
                   f'<text x="{85 + length:.1f}" y="{22 * i + 15}" font-size="12">{count}</text>')
    return "".join(out) + "</svg>"


def class_html(summary: dict) -> str:
    """The class report as an HTML page."""
    parts = ["<!doctype html><meta charset='utf-8'><title>Class report</title><h1>Class report</h1>"]
    for (lesson, grade_id), entry in sorted(summary.items()):
        parts.append(f"<h2>{html.escape(Path(lesson).stem)}: {html.escape(grade_id)}</h2>"
                     f"<p>{entry['passed']} of {entry['students']} passed</p>{bar_chart(entry)}<ul>")
        parts += [f"<li><code>{html.escape(code)}</code>: {count} of {entry['students']}: "
                  f"{html.escape(entry['texts'][code])}</li>" for code, count in entry["mistakes"].most_common()]
        parts.append("</ul>")
    return "\n".join(parts) + "\n"


def write_all(report: dict, out: Path, hand_graded=None) -> str:
    """grades.csv, lms.csv, class_report.html and class_report.txt in ``out``; the class report's text."""
    points, maxima = cells(report)
    merge_hand_graded(points, maxima, hand_graded)
    rows = table(points, maxima)
    write_csv(rows, out / "grades.csv")
    write_csv(lms_rows(rows), out / "lms.csv")
    summary = class_summary(report)
    (out / "class_report.html").write_text(class_html(summary))
    text = class_text(summary)
    (out / "class_report.txt").write_text(text + "\n")
    return text
