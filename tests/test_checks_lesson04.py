"""Lesson 04's exercise check accepts a right Circle loss and rejects typical mistakes, one of them only through
the gradient."""
import pytest
from loss_references import circle

from course_utils.checks import lesson04


def test_right_answer_passes(capsys):
    lesson04.check_circle_loss(circle)
    assert capsys.readouterr().out.count("✓") == 1


@pytest.mark.parametrize("mistake", [
    dict(normalize=False), dict(include_self=True), dict(all_anchors=True), dict(euclidean=True)],
    ids=["no normalisation", "anchor as its own positive", "mean over all anchors", "Euclidean distance"])
def test_circle_check_rejects(mistake):
    with pytest.raises(AssertionError, match="expected"):
        lesson04.check_circle_loss(lambda e, l, **kw: circle(e, l, **kw, **mistake))


def test_circle_check_catches_missing_detach_through_the_gradient():
    with pytest.raises(AssertionError, match=r"gradient differs.*sim\.detach\(\)"):
        lesson04.check_circle_loss(lambda e, l, **kw: circle(e, l, **kw, detach=False))


def test_check_names_the_exact_mistake():
    with pytest.raises(AssertionError, match="exactly what you get if .*over all anchors"):
        lesson04.check_circle_loss(lambda e, l, **kw: circle(e, l, **kw, all_anchors=True))
