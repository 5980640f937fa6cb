"""Lesson 01's exercise checks pass a right answer and reject typical wrong ones with a helpful message."""
import pytest
import torch
import torch.nn.functional as F

from course_utils.checks import lesson01


def cosine_right(x, y):
    return 1 - F.normalize(x, dim=1) @ F.normalize(y, dim=1).T


def cosine_stub(x, y):
    raise NotImplementedError()


def test_cosine_check_accepts_right_answer(capsys):
    lesson01.check_cosine_distance(cosine_right)
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
        lesson01.check_cosine_distance(wrong)


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
    lesson01.check_r_precision(r_precision_right)
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("wrong", [r_precision_with_self, r_precision_r_with_self, precision_at_1_instead])
def test_r_precision_check_rejects(wrong):
    with pytest.raises(AssertionError, match="Expected R-Precision"):
        lesson01.check_r_precision(wrong)


def test_r_precision_check_rejects_non_numbers():
    with pytest.raises(AssertionError, match="one number"):
        lesson01.check_r_precision(lambda e, l: torch.zeros(3))
