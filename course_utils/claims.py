"""Claims: the sentences a lesson writes about its own run's numbers, checked against those numbers.

A lesson states a finding in words ("the triplet loss ties the contrastive loss on unseen classes") and
``check`` tests it on the numbers the cell above measured. What happens when the numbers disagree depends on
who runs the notebook:

* quick mode: nothing is checked (its small data and single epoch can't support a finding);
* a strict run (``course.py run``, CI and the grader's full mode, which set ``COURSE_STRICT=1``): the cell raises
  ``AssertionError``, so the course's text never goes out contradicted by its own run;
* anyone else (a student in JupyterLab or Colab, on a GPU or another CPU): the cell prints a warning with the
  text, this run's numbers and the margin, and the notebook goes on; ``report`` at the lesson's end lists them.

The course's rule for reading a comparison lives here too, with one pair of names: ``wins`` and ``ties``,
on two numbers (``wins(0.81, 0.74)``: ahead by more than ``NOISE``) or on two rows of a results table
(``wins(table, "joint", "metric only", "unseen")``: ahead by more than ``threshold``, the noise or the two
rows' seed spreads added, whichever is larger). Both call ``note``, so a claim that misses can show what was
compared.
"""
import json
import os
import sys
from dataclasses import dataclass, field

STRICT_ENV = "COURSE_STRICT"
LOG_ENV = "COURSE_CLAIMS"  # a file the course runner names for each lesson: every claim met is added as a JSON line
NOISE = 0.03  # largest gap measured between two full runs of one seed on two 2-core machines: smaller gaps are ties
WHY_MACHINES_DIFFER = ("Another machine (a GPU, another CPU, other library builds) computes slightly different "
                       "floating-point sums, so training takes a different path; differences within the course's "
                       f"noise margin ({NOISE}, or the seeds' spread when larger) were checked on two machines, and "
                       "yours may go past it. The finding is about the course's runs; read it with your numbers.")
SHOWN_COMPARISONS = 12


@dataclass
class Record:
    """One claim as this kernel checked it: ``held`` is None when it was not checked (quick mode, other device)."""

    text: str
    held: bool | None
    evidence: list = field(default_factory=list)


_pending: list = []  # comparisons made since the last claim
_log: list = []  # every claim this kernel has met, in order


def keep(record: Record) -> None:
    """Add ``record`` to this kernel's log, and to the file ``$COURSE_CLAIMS`` names (the course runner's, which
    the course website's page of claims reads), if one is named."""
    _log.append(record)
    path = os.environ.get(LOG_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as file:
            file.write(json.dumps({"text": record.text, "held": record.held}, ensure_ascii=False) + "\n")


def strict(environ=None) -> bool:
    """Strict runs stop at a claim that misses: ``COURSE_STRICT`` set to 1/true/yes/on."""
    environ = os.environ if environ is None else environ
    return environ.get(STRICT_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def note(evidence: str) -> None:
    """Remember one comparison (what was compared, the difference, the margin) for the next ``check``."""
    _pending.append(evidence)


def _take_evidence() -> list:
    evidence = _pending[-SHOWN_COMPARISONS:]
    _pending.clear()
    return evidence


def threshold(table: dict, a: str, b: str, split: str, metric: str = "map_r") -> float:
    """How far apart rows ``a`` and ``b`` of a results table must be to differ: ``NOISE`` (between machines), or
    their seed spreads (``f"{metric}_std"``) added, whichever is larger."""
    spread = table[a][split].get(f"{metric}_std", 0.0) + table[b][split].get(f"{metric}_std", 0.0)
    return max(NOISE, spread)


def _gap(args) -> tuple:
    """``(a - b, threshold)`` of ``(x, y[, needed])`` (two numbers) or ``(table, a, b, split[, metric])``, noted."""
    if isinstance(args[0], dict):
        table, a, b, split, *metric = args
        metric = metric[0] if metric else "map_r"
        diff, needed = table[a][split][metric] - table[b][split][metric], threshold(table, a, b, split, metric)
        note(f"{a} − {b}, {split} {metric}: {diff:+.3f} (margin {needed:.3f})")
        return diff, needed
    x, y, *needed = args
    needed = needed[0] if needed else NOISE
    note(f"{x:.3f} − {y:.3f} = {x - y:+.3f} (margin {needed:.3f})")
    return x - y, needed


def wins(*args) -> bool:
    """``wins(x, y)``: number ``x`` beats ``y`` by more than ``NOISE`` (or by more than a third argument, a
    threshold of the caller's). ``wins(table, a, b, split, metric="map_r")``:
    row ``a`` of a results table beats row ``b`` by more than ``threshold``. Only then is it a win."""
    diff, needed = _gap(args)
    return diff > needed


def ties(*args) -> bool:
    """Neither side ``wins``: the difference is within ``NOISE`` (two numbers) or ``threshold`` (two table rows);
    the same arguments as ``wins``."""
    diff, needed = _gap(args)
    return abs(diff) <= needed


def warning_text(text: str, evidence: list) -> str:
    """What a student sees when a claim misses on their machine."""
    lines = ["⚠ NOT CONFIRMED ON THIS MACHINE. The lesson's text says:", f"    {text}",
             "but this run's numbers do not support it."]
    if evidence:
        lines.append("What this run compared (difference against its margin):")
        lines += [f"    {item}" for item in evidence]
    lines += [WHY_MACHINES_DIFFER, "The notebook goes on; the lesson's last cell lists every claim that missed."]
    return "\n".join(lines)


def check(config, holds: bool, text: str, only_on: str | None = None) -> None:
    """Check one claim (see the module's docstring). ``only_on="cpu"`` marks a claim about one kind of device's
    timings: on another device it is printed as not checked."""
    evidence = _take_evidence()
    if config.quick or (only_on is not None and config.device.type != only_on):
        why = "quick mode" if config.quick else f"measured on {only_on} only; this is {config.device.type}"
        print(f"({why}: not checked) {text}")
        keep(Record(text, None, evidence))
        return
    keep(Record(text, bool(holds), evidence))
    if holds:
        print(f"✓ {text}")
        return
    if strict():
        details = "".join(f"\n    {item}" for item in evidence)
        raise AssertionError(f"The lesson claims: {text!r}, but this run's numbers contradict it.{details}")
    print(warning_text(text, evidence), file=sys.stderr, flush=True)


def log() -> list:
    """The claims this kernel has checked so far (``Record``s, in order)."""
    return list(_log)


def reset() -> None:
    """Forget every claim and comparison (a fresh lesson in the same process, as in the tests)."""
    _log.clear()
    _pending.clear()


def report(config) -> list:
    """Print the lesson's tally of claims and list those that missed; return the missed ``Record``s."""
    checked = [r for r in _log if r.held is not None]
    missed = [r for r in checked if not r.held]
    if not checked:
        reason = "quick mode checks none" if config.quick else "none was checked here"
        print(f"This lesson makes {len(_log)} claim(s) about its numbers; {reason}.")
        return missed
    print(f"{len(checked) - len(missed)} of {len(checked)} checked claims held on this machine"
          + (f" ({len(_log) - len(checked)} not checked here)." if len(checked) < len(_log) else "."))
    for record in missed:
        print(f"  ⚠ not confirmed: {record.text}")
    return missed
