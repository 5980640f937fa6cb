"""Helpers for the deep metric learning course.

Import modules by name, e.g. ``from course_utils import data, evaluation``.
Importing this package does nothing but define names: seeding and device choice
happen in ``setup(seed)``, called once in each notebook's setup cell. ``setup`` and
``Config`` are loaded on first use, so that tools that never train (the grader, the
course runner) start without importing torch.
"""

__all__ = ["Config", "setup"]


def __getattr__(name: str):
    """``course_utils.setup`` and ``course_utils.Config``, from ``session`` when first asked for (PEP 562)."""
    if name in __all__:
        from . import session

        return getattr(session, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
