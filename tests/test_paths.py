"""Finding the course's files: $COURSE_ROOT, else up from the working directory, else beside the package."""
from pathlib import Path

import pytest

from course_utils import paths

REPO = Path(__file__).resolve().parent.parent


def make_course(folder: Path) -> Path:
    """A folder that looks like the course: data/fashion_mnist/ and notebooks/."""
    for marker in paths.MARKERS:
        (folder / marker).mkdir(parents=True)
    return folder


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No $COURSE_ROOT, and the working directory in an empty folder outside the checkout."""
    monkeypatch.delenv(paths.ROOT_ENV, raising=False)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    return monkeypatch


def test_course_root_variable_wins(clean_env, tmp_path):
    course = make_course(tmp_path / "course")
    clean_env.setenv(paths.ROOT_ENV, str(course))
    assert paths.course_root() == course.resolve()
    assert paths.data_dir() == course.resolve() / "data" / "fashion_mnist"
    assert paths.notebooks_dir() == course.resolve() / "notebooks"


def test_a_wrong_course_root_variable_is_an_error(clean_env, tmp_path):
    clean_env.setenv(paths.ROOT_ENV, str(tmp_path))
    with pytest.raises(paths.CourseNotFoundError, match=rf"COURSE_ROOT is {tmp_path}, which does not hold"):
        paths.course_root()


def test_walks_up_from_the_working_directory(clean_env, tmp_path):
    course = make_course(tmp_path / "course")
    (course / "notebooks" / "drafts").mkdir()
    clean_env.chdir(course / "notebooks" / "drafts")
    assert paths.course_root() == course.resolve()  # before the checkout this package lives in


def test_falls_back_to_the_folder_above_the_package(clean_env):
    assert paths.course_root() == REPO  # this checkout: the tests run on an editable install


def test_nothing_found_says_what_was_looked_for_and_how_to_fix_it(clean_env, tmp_path):
    clean_env.setattr(paths, "__file__", str(tmp_path / "site-packages" / "course_utils" / "paths.py"))
    with pytest.raises(paths.CourseNotFoundError) as error:
        paths.course_root()
    message = str(error.value)
    for part in ("data/fashion_mnist/ and notebooks/", "COURSE_ROOT is not set", str(tmp_path / "elsewhere"),
                 str(tmp_path / "site-packages"), "set COURSE_ROOT", "export COURSE_ROOT="):
        assert part in message
