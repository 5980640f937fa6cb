"""Checks of the experiment exercises of lessons 02, 03, 04 and 07: the student's experiment returns a results
table; lesson 05's own check (``lesson05.check_epsilon_experiment``) uses ``check_results_table`` too."""
from .. import evaluation, session
from .plumbing import call


def check_experiment(experiment, *args, methods, splits=("seen", "unseen"), seed: int = 0) -> dict:
    """Experiment exercises (lessons 02-04, 07): run the student's ``experiment(*args)`` and check that it returned
    a results table with ``methods`` on ``splits``; returns the table for the comparison that follows. The random
    generators are seeded first, so the result does not depend on what ran before (a cell answered from the cache
    draws no random numbers, a cell that trains draws many)."""
    session.seed_everything(seed)
    table = call(experiment, *args)
    check_results_table(table, methods, splits)
    return table


def check_results_table(table, methods, splits=("seen", "unseen")) -> None:
    """Experiment exercises (lessons 02-04): ``table`` is a results table ``{method: {split: {"p1", "r_precision",
    "map_r"}}}`` holding the requested methods and splits, as ``lesson.results_table`` returns it."""
    assert isinstance(table, dict), \
        f"Return a results table (a dict), not {type(table).__name__}: use lesson.results_table."
    missing = [m for m in methods if m not in table]
    assert not missing, \
        f"The table has no row {missing[0]!r}; its rows are {list(table)}. Name the model {missing[0]!r}."
    for method in methods:
        row = table[method]
        assert isinstance(row, dict) and all(split in row for split in splits), (
            f"Row {method!r} should have the test sets {list(splits)}, "
            f"it has {list(row) if isinstance(row, dict) else row}.")
        for split in splits:
            metrics = row[split]
            absent = [m for m in evaluation.METRICS if m not in metrics]
            assert not absent, \
                f"{method!r}, {split}: the metric {absent[0]!r} is missing (keys: p1, r_precision, map_r)."
            bad = {m: metrics[m] for m in evaluation.METRICS if not 0 <= float(metrics[m]) <= 1}
            assert not bad, f"{method!r}, {split}: retrieval metrics lie in [0, 1], got {bad}."
    print(f"✓ the table holds {', '.join(map(repr, methods))} on {', '.join(splits)}: "
          "now compare it with your prediction.")
