"""The checks of the lessons' exercises. Each takes the student's function (or an experiment's result), compares it
with a reference on inputs of its own, and prints a line starting with ✓, or raises an AssertionError that explains
the mistake.

One module per lesson with exercises, ``lesson01`` to ``lesson07``, ``lesson09`` and ``lesson10``; ``experiments``
for the experiment exercises that several lessons share; ``plumbing``, what the checks have in common. A lesson
imports the package, ``from course_utils import checks``, and calls e.g. ``checks.lesson05.check_ms_mine(ms_mine)``.
Importing the package loads none of its modules: each is imported when first used (PEP 562), so a lesson loads
only its own checks. The checks import the topic modules (``mining``, ``sampling``, ...), never the other way round.
"""
import importlib

__all__ = ["experiments", "plumbing", "integrity", "lesson01", "lesson02", "lesson03", "lesson04", "lesson05",
           "lesson06", "lesson07", "lesson09", "lesson10"]


def __getattr__(name: str):
    """``checks.lesson05`` and the other modules of ``__all__``, imported when first asked for."""
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
