"""Lesson 03's exercise check accepts a right triplet loss and rejects typical mistakes."""
import pytest
import torch
from loss_references import triplet

from course_utils.checks import lesson03


def test_right_answer_passes(capsys):
    lesson03.check_triplet_loss(triplet)
    assert capsys.readouterr().out.count("✓") == 1


@pytest.mark.parametrize("mistake", [
    dict(sign=-1), dict(normalize=False), dict(reduce=torch.mean), dict(include_self=True)],
    ids=["margin sign", "no normalisation", "mean over all", "anchor as its own positive"])
def test_triplet_check_rejects(mistake):
    with pytest.raises(AssertionError, match="expected"):
        lesson03.check_triplet_loss(lambda e, l, **kw: triplet(e, l, **kw, **mistake))


def test_triplet_check_rejects_the_wrong_default_margin():
    with pytest.raises(AssertionError, match="0.05"):
        lesson03.check_triplet_loss(lambda e, l, margin=0.2: triplet(e, l, margin))


@pytest.mark.parametrize("wrong, diagnosis", [
    (lambda e, l, **kw: triplet(e, l, **kw, normalize=False), "not L2-normalised"),
    (lambda e, l, **kw: triplet(e, l, **kw, reduce=torch.mean), "over all triplets"),
    (lambda e, l, margin=0.2: triplet(e, l, margin), "default margin is 0.2"),
])
def test_check_names_the_exact_mistake(wrong, diagnosis):
    with pytest.raises(AssertionError, match=f"exactly what you get if .*{diagnosis}"):
        lesson03.check_triplet_loss(wrong)
