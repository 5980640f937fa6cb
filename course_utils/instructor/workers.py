"""Notebooks side by side, for the course runner and the grader: worker processes, each starting its own
kernels, and the one setting that lets kernels running at once share the cores."""
import multiprocessing
import os
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


def _in_own_session(target, *args) -> None:
    """``target(*args)`` in a session of its own, so that nothing the target starts can signal its parent's group."""
    os.setsid()
    target(*args)


def run_isolated(target, arguments, count: int, jobs: int, timeout: float, preload=(), poll: float = 0.05):
    """Yield ``(i, exitcode)`` as each of ``count`` calls ``target(*arguments(i, slot))`` finishes, ``jobs`` at a
    time, each in a process of its own (forked from a server that imported ``preload`` once, so that a process
    starts in milliseconds); ``slot`` (0 to jobs - 1) is the place it holds among those running. A process that
    dies takes nothing with it; one running past ``timeout`` seconds is killed (exitcode -9)."""
    share_cores(jobs)
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(preload))
    waiting, running = list(range(count)), {}
    while waiting or running:
        while waiting and len(running) < jobs:
            i, slot = waiting.pop(0), min(set(range(jobs)) - {s for _, s, _ in running.values()})
            proc = context.Process(target=_in_own_session, args=(target, *arguments(i, slot)))
            proc.start()
            running[i] = (proc, slot, time.monotonic())
        for i, (proc, _, started) in list(running.items()):
            if proc.is_alive() and time.monotonic() - started > timeout:
                proc.kill()
            if not proc.is_alive():
                proc.join()
                del running[i]
                yield i, proc.exitcode
        time.sleep(poll)
