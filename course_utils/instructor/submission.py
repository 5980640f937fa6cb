"""One submission, graded in a process of its own (the grader outlives it, whatever the submission does):

    python -m course_utils.instructor.submission TASK.json

TASK.json (written by ``grade``) holds the submission's path, the instructor's notebook and the checks' sources as
they were when grading started, the limits and where to write the result. The kernel runs in a throw-away workspace
(``jail``), its check cells armed (``verdict``); the result is written to ``task["result"]`` as JSON."""
import json
import os
import signal
import sys
from pathlib import Path

import nbformat
from jupyter_client.manager import AsyncKernelManager

from . import grade, jail, verdict
from .run_course import QUIET_KERNEL

STARTUP_TIMEOUT = 300  # seconds a kernel may take to start: minutes on a machine busy grading


class JailedKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel command runs behind a prefix (limits, and bubblewrap with ``--sandbox``)."""

    prefix: list = []

    def format_kernel_cmd(self, extra_arguments=None):
        return [*self.prefix, *super().format_kernel_cmd(extra_arguments)]

    async def interrupt_kernel(self):
        """SIGINT to the kernel alone (jupyter_client signals its whole process group, so that every process a
        submission forked would go on running the kernel's code as though it were the kernel); in a sandbox, whose
        process is bubblewrap's, an interrupt request the kernel answers by interrupting itself."""
        if self.kernel_spec.interrupt_mode == "message":
            return await super().interrupt_kernel()
        os.kill(self.provisioner.process.pid, signal.SIGINT)


def kernel_manager(root: Path, limits: jail.Limits, sandbox: bool) -> AsyncKernelManager:
    """The kernel manager of one submission; with ``sandbox`` it talks to its kernel over files in ``root``."""
    km = JailedKernelManager(kernel_name="python3", **({"transport": "ipc", "ip": str(root / "kernel")} if sandbox
                                                       else {}))
    km.connection_file = str(root / "kernel.json")
    km.prefix = (jail.sandbox_command(root) if sandbox else []) + limits.wrapper()
    if sandbox:
        km.kernel_spec.interrupt_mode = "message"
    return km


def run(nb, root: Path, task: dict):
    """Execute the armed notebook in its workspace; ``(executed notebook, GradingClient)``."""
    from nbclient.exceptions import DeadKernelError

    limits = jail.Limits(**task["limits"])
    client = verdict.GradingClient(nb, task["secret"], km=kernel_manager(root, limits, task["sandbox"]),
                                   timeout=task["timeout"], allow_errors=True, interrupt_on_timeout=True,
                                   startup_timeout=STARTUP_TIMEOUT,
                                   extra_arguments=QUIET_KERNEL,
                                   resources={"metadata": {"path": str(root / "course" / "notebooks")}})
    if not task["sandbox"]:  # a cell that runs out of time loses the processes it started first
        client.before_interrupt = lambda: jail.kill_marked(task["run"], spare=client.km.provisioner.process.pid)
    try:
        client.execute(env=jail.kernel_env(root, task["run"]))
    except DeadKernelError:
        pass  # cells after the crash have not run: they score nothing
    except Exception as err:  # no kernel, or one that broke the protocol: what ran still counts
        client.stopped = f"{type(err).__name__}: {str(err)[:200]}"
    return nb, client


def grade_task(task: dict) -> dict:
    """The report of one submission (see ``grade.grade_notebook``)."""
    path, instructor = Path(task["submission"]), nbformat.from_dict(task["instructor"])
    try:
        submission = nbformat.read(path, as_version=4)
    except Exception as err:  # unreadable file: every exercise scores zero
        return grade.unreadable(path, instructor, err, task["notebook"])
    submission, recovered = grade.recover_solutions(submission, instructor)
    root = jail.workspace(Path(task["package"]), task["limits"].get("uid"))
    try:
        files = {name: str(root / "pkg" / "course_utils" / "checks" / file) for name, file in task["files"].items()}
        armed = grade.arm_checks(grade.prepare(submission, instructor), task["secret"], task["sources"], files)
        executed, client = run(armed, root, task)
    finally:
        jail.kill_marked(task["run"])
        jail.remove(root)
    rows = grade.score(executed, instructor, submission, task["timeout"], recovered, client)
    if task.get("feedback"):
        grade.write_feedback(executed, instructor, Path(task["feedback"]) / grade.feedback_name(path))
    return grade.notebook_report(path, rows, task["notebook"])


def main(argv=None) -> int:
    task = json.loads(Path((argv or sys.argv[1:])[0]).read_text())
    os.environ.update(task.get("env", {}))
    result = grade_task(task)
    Path(task["result"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
