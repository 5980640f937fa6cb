"""Notebooks side by side: the worker pool returns every task's result once, and kernels started by it share
the cores."""
import os
import time

import pytest

from course_utils.instructor import workers


def square(x):
    return x * x


@pytest.mark.parametrize("jobs", [1, 2])
def test_run_all_gives_each_task_its_result(jobs):
    tasks = [(n,) for n in range(5)]
    results = dict(workers.run_all(square, tasks, jobs))
    assert results == {i: n * n for i, (n,) in enumerate(tasks)}


def test_one_job_runs_in_order_in_this_process():
    seen = []
    assert list(workers.run_all(lambda x: seen.append(x) or os.getpid(), [("a",), ("b",)], 1)) == [
        (0, os.getpid()), (1, os.getpid())]
    assert seen == ["a", "b"]


def test_share_cores_only_for_several_jobs_and_never_over_the_users_setting(monkeypatch):
    monkeypatch.delenv(workers.WAIT_POLICY, raising=False)
    workers.share_cores(1)
    assert workers.WAIT_POLICY not in os.environ
    workers.share_cores(2)
    assert os.environ[workers.WAIT_POLICY] == "PASSIVE"
    monkeypatch.setenv(workers.WAIT_POLICY, "ACTIVE")
    workers.share_cores(2)
    assert os.environ[workers.WAIT_POLICY] == "ACTIVE"


def exit_with(i):
    """Exit with status ``i``; the fourth hangs."""
    if i == 3:
        time.sleep(30)
    raise SystemExit(i)


def test_run_isolated_gives_each_its_exit_status_kills_the_slow_and_reuses_slots():
    slots = {}

    def arguments(i, slot):
        slots[i] = slot
        return (i,)

    results = dict(workers.run_isolated(exit_with, arguments, 5, jobs=2, timeout=5))
    assert results == {0: 0, 1: 1, 2: 2, 3: -9, 4: 4}
    assert set(slots.values()) <= {0, 1}
