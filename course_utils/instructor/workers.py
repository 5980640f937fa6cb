"""Notebooks side by side, for the course runner and the grader: worker processes, each starting its own
kernels, and the one setting that lets kernels running at once share the cores."""
import os
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

WAIT_POLICY = "OMP_WAIT_POLICY"


def share_cores(jobs: int) -> None:
    """Before starting ``jobs`` kernels at once, let their idle OpenMP threads sleep instead of spinning
    (``OMP_WAIT_POLICY=PASSIVE``, unless it is set already); kernels inherit this process's environment.

    Measured on 2 cores, one training step of the lessons' network: two kernels whose threads spin wait for each
    other, each at a sixth of one kernel's speed alone (a third together); with sleeping threads the two together
    train at about 1.2 times one kernel's speed, and a kernel alone loses 15-20%. Each kernel keeps torch's default
    number of threads, so it computes the numbers it computes alone (fewer threads would split sums differently and
    change the last digits of every training run)."""
    if jobs > 1:
        os.environ.setdefault(WAIT_POLICY, "PASSIVE")


def run_all(fn, tasks: list, jobs: int):
    """Yield ``(i, fn(*tasks[i]))`` for each task as it finishes: ``jobs`` at a time in worker processes,
    started in the order given (one job: one after another, in this process)."""
    if jobs <= 1 or len(tasks) <= 1:
        for i, task in enumerate(tasks):
            yield i, fn(*task)
        return
    share_cores(jobs)
    with ProcessPoolExecutor(min(jobs, len(tasks))) as pool:
        futures = {pool.submit(fn, *task): i for i, task in enumerate(tasks)}
        for future in as_completed(futures):
            yield futures[future], future.result()


def run_commands(command, count: int, jobs: int, timeout: float, poll: float = 0.05):
    """Yield ``(i, returncode)`` as each of ``count`` commands finishes, ``jobs`` at a time: ``command(i, slot)`` is
    the argument list of the i-th, ``slot`` (0 to jobs - 1) the place it holds among those running. Each runs in a
    session of its own, so that nothing it does reaches this process; one running past ``timeout`` seconds is
    killed (returncode -9)."""
    share_cores(jobs)
    waiting, running = list(range(count)), {}
    while waiting or running:
        while waiting and len(running) < jobs:
            i, slot = waiting.pop(0), min(set(range(jobs)) - {s for _, s, _ in running.values()})
            running[i] = (subprocess.Popen(command(i, slot), start_new_session=True), slot, time.monotonic())
        for i, (proc, _, started) in list(running.items()):
            if proc.poll() is None and time.monotonic() - started > timeout:
                proc.kill()
            if proc.poll() is not None:
                del running[i]
                yield i, proc.returncode
        time.sleep(poll)
