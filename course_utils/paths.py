"""Where the course's files are: the folder holding ``data/fashion_mnist`` and ``notebooks/``."""
import os
from pathlib import Path

ROOT_ENV = "COURSE_ROOT"
MARKERS = ("data/fashion_mnist", "notebooks")


class CourseNotFoundError(FileNotFoundError):
    """No folder holding the course's data and notebooks was found."""


def is_course_root(folder) -> bool:
    """Whether ``folder`` holds ``data/fashion_mnist/`` and ``notebooks/``."""
    return all((Path(folder) / marker).is_dir() for marker in MARKERS)


def _not_found(where: str) -> CourseNotFoundError:
    """The error saying where the course's files were looked for and how to point the course at them."""
    wanted = " and ".join(marker + "/" for marker in MARKERS)
    return CourseNotFoundError(
        f"Could not find the course's files (a folder holding {wanted}): {where}. Run from inside the course's "
        f"checkout (its notebooks/ folder, say), or set {ROOT_ENV} to the checkout's path: "
        f"export {ROOT_ENV}=/path/to/the/course")


def course_root() -> Path:
    """``$COURSE_ROOT`` if set, else the first course folder at or above the working directory, else the
    folder above this package (an editable install); raise ``CourseNotFoundError`` saying how to fix it."""
    if os.environ.get(ROOT_ENV):
        root = Path(os.environ[ROOT_ENV]).expanduser().resolve()
        if not is_course_root(root):
            raise _not_found(f"{ROOT_ENV} is {root}, which does not hold them")
        return root
    cwd, package_parent = Path.cwd().resolve(), Path(__file__).resolve().parent.parent
    root = next((p for p in (cwd, *cwd.parents, package_parent) if is_course_root(p)), None)
    if root is None:
        raise _not_found(f"{ROOT_ENV} is not set, and neither the working directory {cwd} nor a folder above it "
                         f"holds them, nor {package_parent}, where course_utils is installed")
    return root


def data_dir() -> Path:
    """The course's Fashion-MNIST folder, ``<course root>/data/fashion_mnist``."""
    return course_root() / "data" / "fashion_mnist"


def notebooks_dir() -> Path:
    """The course's lessons, ``<course root>/notebooks``."""
    return course_root() / "notebooks"
