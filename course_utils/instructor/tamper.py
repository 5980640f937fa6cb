"""What a submission could rewrite to change other grades, watched. The grader runs every kernel from a copy of the
student package made once when grading starts (``template``), and sends the instructor's notebooks and checks from
memory; so a write to the instructor's checkout changes no grade. A write to that copy, or to the instructor's
notebooks being graded, is found after the submission that made it: the copy is put back, and that submission
scores zero. The instructor's own files are never written by the grader (others may be editing them)."""
import shutil
import tempfile
from pathlib import Path


def _files(folder: Path) -> dict:
    """``{path: bytes}`` of every file under ``folder``, ``__pycache__`` left out."""
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


class Snapshot:
    """A read-only copy of the student package (``template``) and the contents of the notebooks being graded."""

    def __init__(self, package: Path, notebooks):
        self.template = Path(tempfile.mkdtemp(prefix="grader-package-"))
        shutil.copytree(package, self.template / "course_utils",
                        ignore=shutil.ignore_patterns("instructor", "*.ipynb", "__pycache__"))
        self.package, self.notebooks = _files(self.template), {Path(p): Path(p).read_bytes() for p in notebooks}
        for path in self.package:
            path.chmod(0o444)

    def changed(self) -> list:
        """The files written since the snapshot (the package copy's put back as they were)."""
        now = _files(self.template)
        changed = sorted({p for p in self.package if now.get(p) != self.package[p]} | now.keys() - self.package.keys())
        for path in changed:
            if path in self.package:
                path.unlink(missing_ok=True)
                path.write_bytes(self.package[path])
                path.chmod(0o444)
            else:
                path.unlink()
        moved = [p for p, data in self.notebooks.items() if not p.is_file() or p.read_bytes() != data]
        return [str(p) for p in changed + moved]

    def remove(self) -> None:
        """Delete the package copy."""
        shutil.rmtree(self.template, ignore_errors=True)
