"""Every exercise check passes a right answer and rejects typical wrong ones with a helpful message."""
import pytest
import torch
import torch.nn.functional as F

from course_utils import exercises


def cosine_right(x, y):
    return 1 - F.normalize(x, dim=1) @ F.normalize(y, dim=1).T


def cosine_stub(x, y):
    raise NotImplementedError()


def test_cosine_check_accepts_right_answer(capsys):
    exercises.check_cosine_distance(cosine_right)
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, message", [
    (cosine_stub, "not implemented"),
    (lambda x, y: F.normalize(x, dim=1) @ F.normalize(y, dim=1).T, "similarity"),
    (lambda x, y: 1 - x @ y.T, "normalised"),
    (lambda x, y: 1 - F.normalize(x, dim=0) @ F.normalize(y, dim=0).T, "Wrong values"),
    (lambda x, y: torch.cdist(x, y), "Wrong values"),
    (lambda x, y: cosine_right(x, y).tolist(), "torch tensor"),
    (lambda x, y: cosine_right(y, x), "shape"),
])
def test_cosine_check_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        exercises.check_cosine_distance(wrong)


def r_precision_right(embeddings, labels):
    dist = torch.cdist(embeddings, embeddings).fill_diagonal_(float("inf"))
    order = dist.argsort(dim=1)
    total = 0.0
    for q in range(len(labels)):
        r = int((labels == labels[q]).sum()) - 1
        total += (labels[order[q, :r]] == labels[q]).float().mean().item()
    return total / len(labels)


def r_precision_with_self(embeddings, labels):
    order = torch.cdist(embeddings, embeddings).argsort(dim=1)
    r = torch.bincount(labels)[labels]
    return sum((labels[order[q, :r[q]]] == labels[q]).float().mean().item() for q in range(len(labels))) / len(labels)


def r_precision_r_with_self(embeddings, labels):
    dist = torch.cdist(embeddings, embeddings).fill_diagonal_(float("inf"))
    order = dist.argsort(dim=1)
    r = torch.bincount(labels)[labels]  # forgot to subtract the query itself
    return sum((labels[order[q, :r[q]]] == labels[q]).float().mean().item() for q in range(len(labels))) / len(labels)


def precision_at_1_instead(embeddings, labels):
    dist = torch.cdist(embeddings, embeddings).fill_diagonal_(float("inf"))
    return (labels[dist.argmin(dim=1)] == labels).float().mean().item()


def test_r_precision_check_accepts_right_answer(capsys):
    exercises.check_r_precision(r_precision_right)
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("wrong", [r_precision_with_self, r_precision_r_with_self, precision_at_1_instead])
def test_r_precision_check_rejects(wrong):
    with pytest.raises(AssertionError, match="Expected R-Precision"):
        exercises.check_r_precision(wrong)


def test_r_precision_check_rejects_non_numbers():
    with pytest.raises(AssertionError, match="one number"):
        exercises.check_r_precision(lambda e, l: torch.zeros(3))


GOOD_TABLE = {"m": {"seen": {"p1": 0.9, "r_precision": 0.5, "map_r": 0.4},
                    "unseen": {"p1": 0.8, "r_precision": 0.4, "map_r": 0.3}}}


def test_results_table_check_accepts_a_table(capsys):
    exercises.check_results_table(GOOD_TABLE, ["m"])
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("table, message", [
    ([0.4], "not list"),
    ({"other": GOOD_TABLE["m"]}, "no row 'm'"),
    ({"m": {"seen": GOOD_TABLE["m"]["seen"]}}, "should have the test sets"),
    ({"m": {"seen": {"p1": 0.9, "map_r": 0.4}, "unseen": GOOD_TABLE["m"]["unseen"]}}, "'r_precision' is missing"),
    ({"m": {"seen": {"p1": 90, "r_precision": 0.5, "map_r": 0.4}, "unseen": GOOD_TABLE["m"]["unseen"]}}, r"lie in \[0, 1\]"),
])
def test_results_table_check_names_the_problem(table, message):
    with pytest.raises(AssertionError, match=message):
        exercises.check_results_table(table, ["m"])


def test_experiment_check_runs_the_experiment_and_explains_a_stub():
    assert exercises.check_experiment(lambda margin: GOOD_TABLE, 0.5, methods=["m"]) is GOOD_TABLE

    def stub(margin):
        raise NotImplementedError()
    with pytest.raises(AssertionError, match="not implemented yet"):
        exercises.check_experiment(stub, 0.5, methods=["m"])


def test_an_experiment_runs_on_seeded_generators_whatever_ran_before():
    draw = lambda _: {"m": {s: {"p1": torch.rand(()).item(), "r_precision": 0.5, "map_r": 0.5}
                            for s in ("seen", "unseen")}}
    first = exercises.check_experiment(draw, 0, methods=["m"])
    torch.rand(1000)  # what an earlier cell might have drawn
    assert exercises.check_experiment(draw, 0, methods=["m"]) == first
