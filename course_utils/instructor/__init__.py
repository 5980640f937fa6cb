"""The instructor's tools, apart from what lessons import: student copies (``assign``), the autograder
(``grade``), the Colab badge sync (``colab``) and the course runner (``run_course``); the runner and the
grader run notebooks side by side through ``workers``.

Run each as ``python -m course_utils.instructor.<tool>``. Lessons never import this package.
"""
import importlib
import sys


def alias(old_name: str, tool: str) -> None:
    """Make the module ``old_name`` (e.g. ``course_utils.assign``) stand for ``course_utils.instructor.<tool>``;
    run as a script (``python -m course_utils.assign``), run the tool."""
    module = importlib.import_module(f"{__name__}.{tool}")
    if old_name == "__main__":
        sys.exit(module.main())
    sys.modules[old_name] = module
