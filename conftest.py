"""pytest settings for the whole repository: notebooks run in quick mode unless told otherwise, and each
notebook's cells stay together on one pytest-xdist worker."""
import os

import pytest

os.environ.setdefault("COURSE_QUICK", "1")


def pytest_collection_modifyitems(items):
    """Put every cell of a notebook in one ``xdist_group``: with ``--dist loadgroup`` (``course.py test``) the cells
    run in order in one kernel on one worker, while the unit tests spread over the workers one by one."""
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.xdist_group(item.path.stem))
