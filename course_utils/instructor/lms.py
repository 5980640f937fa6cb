"""Which lesson each submitted file answers, and whose it is: a file named as the lesson (one folder per student),
or a flat LMS bulk download whose files are renamed ``<student>_<ids>_<lesson file name>[-N].ipynb`` (Canvas; Moodle's
``<Full Name>_<id>_assignsubmission_file_<lesson file name>`` too), or else the lesson whose grade_ids it holds."""
import re
from pathlib import Path

import nbformat

from .assign import grading

VERSION = re.compile(r"-\d+$")


def by_name(path: Path, lessons: list):
    """The lesson file name that ``path``'s name is, or ends with after an LMS prefix; else None."""
    stem = VERSION.sub("", path.stem)
    for lesson in sorted(lessons, key=len, reverse=True):
        if path.name == lesson or stem == Path(lesson).stem or stem.endswith("_" + Path(lesson).stem):
            return lesson
    return None


def by_grade_ids(path: Path, ids: dict):
    """The lesson sharing the most grade_ids with the notebook at ``path`` (``ids``: lesson -> set), or None."""
    try:
        found = {grading(c).get("grade_id") for c in nbformat.read(path, as_version=4).cells} - {None}
    except Exception:
        return None
    best = max(ids, key=lambda lesson: len(ids[lesson] & found), default=None)
    return best if best and ids[best] & found else None


def match(paths: list, source: Path) -> list:
    """``[(path, lesson file name or None)]`` for the submitted files, in order."""
    lessons = sorted(p.name for p in source.glob("*.ipynb"))
    ids = {}
    out = []
    for path in paths:
        lesson = by_name(path, lessons)
        if lesson is None:
            if not ids:
                ids = {name: {grading(c).get("grade_id") for c in nbformat.read(source / name, as_version=4).cells}
                       - {None} for name in lessons}
            lesson = by_grade_ids(path, ids)
        out.append((path, lesson))
    return out


def student(submission: str, notebook: str) -> str:
    """Whose a submission is: the LMS prefix (before the first ``_``) of a file renamed ``<student>_..._<lesson>``,
    else its folder's name."""
    path = Path(submission)
    if VERSION.sub("", path.stem).endswith("_" + Path(notebook).stem):
        return path.name.split("_")[0]
    return path.resolve().parent.name
