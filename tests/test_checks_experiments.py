"""The experiment exercises' checks (lessons 02-04, 07) accept a results table and name what is wrong with one."""
import pytest
import torch

from course_utils.checks import experiments

GOOD_TABLE = {"m": {"seen": {"p1": 0.9, "r_precision": 0.5, "map_r": 0.4},
                    "unseen": {"p1": 0.8, "r_precision": 0.4, "map_r": 0.3}}}


def test_results_table_check_accepts_a_table(capsys):
    experiments.check_results_table(GOOD_TABLE, ["m"])
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("table, message", [
    ([0.4], "not list"),
    ({"other": GOOD_TABLE["m"]}, "no row 'm'"),
    ({"m": {"seen": GOOD_TABLE["m"]["seen"]}}, "should have the test sets"),
    ({"m": {"seen": {"p1": 0.9, "map_r": 0.4}, "unseen": GOOD_TABLE["m"]["unseen"]}}, "'r_precision' is missing"),
    ({"m": {"seen": {"p1": 90, "r_precision": 0.5, "map_r": 0.4}, "unseen": GOOD_TABLE["m"]["unseen"]}},
     r"lie in \[0, 1\]"),
])
def test_results_table_check_names_the_problem(table, message):
    with pytest.raises(AssertionError, match=message):
        experiments.check_results_table(table, ["m"])


def test_experiment_check_runs_the_experiment_and_explains_a_stub():
    assert experiments.check_experiment(lambda margin: GOOD_TABLE, 0.5, methods=["m"]) is GOOD_TABLE

    def stub(margin):
        raise NotImplementedError()
    with pytest.raises(AssertionError, match="not implemented yet"):
        experiments.check_experiment(stub, 0.5, methods=["m"])


def test_an_experiment_runs_on_seeded_generators_whatever_ran_before():
    draw = lambda _: {"m": {s: {"p1": torch.rand(()).item(), "r_precision": 0.5, "map_r": 0.5}
                            for s in ("seen", "unseen")}}
    first = experiments.check_experiment(draw, 0, methods=["m"])
    torch.rand(1000)  # what an earlier cell might have drawn
    assert experiments.check_experiment(draw, 0, methods=["m"]) == first
