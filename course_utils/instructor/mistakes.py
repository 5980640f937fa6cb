"""Short, stable codes for why an exercise earned nothing, so that the class report can count them: the mistake a
check names ("That is what you get if ..."), or the message with its numbers and values taken out, hashed; and a
word for what is not a mistake of the answer (unsolved, timeout, crashed, ...)."""
import hashlib
import re

NAMED = re.compile(r"That is (?:exactly )?what you get if (.+?)\.?$", re.S)
KINDS = (("not implemented yet", "unsolved"), ("timed out", "timeout"), ("was deleted", "deleted"),
         ("not run", "crashed"), ("unreadable", "unreadable"), ("replaced code the checks rely on", "tampered"),
         ("did not report success", "tampered"), ("instructor's files", "tampered"), ("calls the course's", "copied"),
         ("grading process", "crashed"), ("grade by hand", "written"))
VALUES = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?|'[^']*'|\"[^\"]*\"|\[[^\]]*\]|\([^)]*\)|\{[^}]*\}")


def mistake_text(status: str) -> str:
    """What the mistake is, in words: the named mistake if the check names one, else the message."""
    named = NAMED.search(status)
    return named.group(1).strip() if named else status.removeprefix("failed: ").removeprefix("AssertionError: ")


def code(grade_id: str, status: str) -> str:
    """``""`` for a pass; a word for a kind of non-answer; else ``E`` and five hex digits of the mistake with its
    values taken out (the same for every student who makes it)."""
    if status == "passed":
        return ""
    for words, kind in KINDS:
        if words in status:
            return kind
    general = " ".join(VALUES.sub("#", mistake_text(status)).split())
    return "E" + hashlib.sha1(f"{grade_id}:{general}".encode()).hexdigest()[:5]
