"""Verdicts a submission cannot forge. Each check cell is sent armed: it first loads the checks afresh from the
sources the grader read when it started (so a patched or rewritten check module is not the one that runs), asks
``checks.integrity`` whether any helper the checks use was replaced, runs the instructor's check, and last prints a
secret made for this run. A check passes only if the kernel's own execute reply says the cell succeeded and the
secret was printed by it; neither a silenced traceback nor a printed "✓" is either."""
import secrets
from pathlib import Path

from nbclient import NotebookClient

CHECKS = Path(__file__).resolve().parent.parent / "checks"
OUTPUT_LIMIT = 2**20  # characters of output kept per cell; the rest is dropped (counted, not stored)

LOADER = """import sys as _gr_sys, types as _gr_types
for _gr_name in [m for m in _gr_sys.modules if m == "course_utils.checks" or m.startswith("course_utils.checks.")]:
    del _gr_sys.modules[_gr_name]
for _gr_name, _gr_source in _gr_sources.items():
    _gr_module = _gr_types.ModuleType(_gr_name)
    _gr_module.__package__ = "course_utils.checks"
    _gr_module.__file__ = _gr_files[_gr_name]
    if _gr_name == "course_utils.checks":
        _gr_module.__path__ = [_gr_files[_gr_name].rpartition("/")[0]]
    _gr_sys.modules[_gr_name] = _gr_module
for _gr_name, _gr_source in _gr_sources.items():
    exec(compile(_gr_source, _gr_files[_gr_name], "exec"), vars(_gr_sys.modules[_gr_name]))
checks = _gr_sys.modules["course_utils.checks"]
__import__("course_utils").checks = checks
_gr_sys.modules["course_utils.checks.integrity"].verify()
del _gr_sources, _gr_files, _gr_name, _gr_source, _gr_module, _gr_sys, _gr_types
"""


def check_sources() -> tuple:
    """``({module name: source}, {module name: file name})`` of the checks package, read now (the ``__init__``
    first, then ``plumbing``, so that relative imports find what they import already loaded)."""
    paths = sorted(CHECKS.glob("*.py"), key=lambda p: (p.stem != "__init__", p.stem != "plumbing", p.stem))
    names = {p: "course_utils.checks" if p.stem == "__init__" else f"course_utils.checks.{p.stem}" for p in paths}
    return {names[p]: p.read_text() for p in paths}, {names[p]: p.name for p in paths}


def needed(source: str, sources: dict) -> dict:
    """The check modules a check cell's ``source`` needs: the package and ``integrity`` always; ``plumbing``,
    ``experiments`` and the lesson modules it names if it calls any check."""
    def wanted(name):
        short = name.rpartition(".")[2]
        return (name == "course_utils.checks" or short == "integrity"
                or "checks." in source and (short in ("plumbing", "experiments") or f".{short}." in source))
    return {name: text for name, text in sources.items() if wanted(name)}


def arm(source: str, secret: str, sources: dict, files: dict) -> str:
    """A check cell's source as sent to the kernel: fresh checks, the integrity check, the check, the secret."""
    sources = needed(source, sources)
    return (f"_gr_sources, _gr_files = {sources!r}, {files!r}\n{LOADER}{source}\n"
            f"print({secret[:8]!r} + {secret[8:]!r})")


def new_secret() -> str:
    """A secret for one run: 32 hex digits."""
    return secrets.token_hex(16)


class GradingClient(NotebookClient):
    """nbclient's client that keeps each cell's execute reply and at most ``OUTPUT_LIMIT`` characters of its output,
    and notes whether ``secret`` appeared in its output."""

    def __init__(self, nb, secret: str, **kwargs):
        super().__init__(nb, on_cell_executed=self._keep_reply, **kwargs)
        self.secret, self.replies, self.seen, self.sizes = secret, {}, set(), {}
        self.before_interrupt, self.stopped = (lambda: None), ""

    async def _async_handle_timeout(self, timeout, cell=None):
        self.before_interrupt()
        return await super()._async_handle_timeout(timeout, cell)

    def _keep_reply(self, cell, cell_index, execute_reply):
        content = execute_reply.get("content", {}) if execute_reply else {}
        self.replies[cell_index] = {"status": content.get("status"), "ename": content.get("ename"),
                                    "evalue": content.get("evalue")}

    def output(self, outs, msg, display_id, cell_index):
        text = msg["content"].get("text", "") if msg["msg_type"] == "stream" else ""
        if self.secret in text:
            self.seen.add(cell_index)
            msg["content"]["text"] = text.replace(self.secret, "")
        size = self.sizes.get(cell_index, 0) + len(str(msg["content"]))
        self.sizes[cell_index] = size
        if size > OUTPUT_LIMIT:
            return None
        return super().output(outs, msg, display_id, cell_index)


def verdict(reply, saw_secret: bool, timeout: int, stopped: str = "") -> str:
    """'passed', or why a check cell earned nothing, from its execute reply (None: it never ran; ``stopped``: why
    grading stopped early, if it did)."""
    if reply is None:
        return f"not run (the kernel died before this cell{': ' + stopped if stopped else ''})"
    if reply["status"] != "ok":
        if reply["ename"] == "KeyboardInterrupt":
            return f"timed out after {timeout} s"
        evalue = str(reply["evalue"] or "")
        return f"failed: {reply['ename']}: {evalue.splitlines()[0] if evalue else ''}"
    if not saw_secret:
        return "failed: the check did not report success (its cell was altered while it ran)"
    return "passed"
