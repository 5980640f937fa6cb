"""The Colab badge and set-up cell of every notebook, made from the one repository URL in pyproject.toml.

    python -m course_utils.instructor.colab    # after changing the URL: rewrite the badges and Colab cells
"""
import argparse
import re
import sys
from pathlib import Path

from ..paths import course_root, notebooks_dir

BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
BADGE_RE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*?([^/)]*\.ipynb)\)")
SETUP_TAG = "colab-setup"


def repo_url(pyproject=None) -> str:
    """The ``Repository`` entry of ``[project.urls]`` in pyproject.toml (default: the course's)."""
    pyproject = pyproject or course_root() / "pyproject.toml"
    match = re.search(r'^Repository\s*=\s*"([^"]+)"', Path(pyproject).read_text(), re.MULTILINE)
    if not match:
        raise ValueError(f"{pyproject} has no Repository URL under [project.urls]")
    return match.group(1).rstrip("/").removesuffix(".git")


def badge(notebook_name: str, url: str) -> str:
    """Markdown for an 'Open in Colab' badge that opens notebooks/<notebook_name> from GitHub's main branch."""
    path = url.split("github.com/", 1)[1]
    return f"[![Open In Colab]({BADGE_IMAGE})](https://colab.research.google.com/github/{path}/blob/main/notebooks/{notebook_name})"


def setup_cell(url: str) -> str:
    """Source of the first code cell: on Colab, clone and install the course; elsewhere, nothing."""
    return f'''# On Colab only: fetch the course (helper package + data) and install it. Elsewhere this does nothing.
import os
import subprocess
import sys

if "google.colab" in sys.modules:
    if not os.path.isdir("/content/course"):
        subprocess.run(["git", "clone", "--depth", "1",
                        "{url}.git",
                        "/content/course"], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "/content/course"], check=True)
    sys.path.insert(0, "/content/course")
    os.chdir("/content/course/notebooks")'''


def sync_badges(text: str, url: str) -> str:
    """Point every Colab badge in a Markdown text at ``url``, keeping the notebook each one opens."""
    return BADGE_RE.sub(lambda m: badge(m.group(1), url), text)


def sync(notebook: Path, url: str) -> bool:
    """Rewrite a notebook's badge and tagged Colab cell for ``url``; True if anything changed."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    before = nbformat.writes(nb)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = sync_badges(cell.source, url)
        elif SETUP_TAG in cell.metadata.get("tags", []):
            cell.source = setup_cell(url)
    changed = nbformat.writes(nb) != before
    if changed:
        nbformat.write(nb, notebook)
    return changed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)  # no options: only --help
    url = repo_url()
    readme = course_root() / "README.md"
    text = readme.read_text()
    if sync_badges(text, url) != text:
        readme.write_text(sync_badges(text, url))
    print(f"README.md: {'updated' if sync_badges(text, url) != text else 'up to date'}")
    for notebook in sorted(notebooks_dir().glob("*.ipynb")):
        print(f"{notebook.name}: {'updated' if sync(notebook, url) else 'up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
