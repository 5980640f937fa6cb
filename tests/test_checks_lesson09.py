"""Lesson 09's exercise check, and its oracle: a naive loop that agrees with ``ann.recall_at_k``."""
import numpy as np
import pytest
from reference_copies import copy_of

from course_utils import ann
from course_utils.checks import lesson09


def test_recall_matches_the_naive_loop():
    for _, found, exact in lesson09._recall_cases():
        assert ann.recall_at_k(found, exact) == pytest.approx(lesson09.recall_at_k_reference(found, exact))
    assert ann.recall_at_k(np.array([[3, 2, 1]]), np.array([[1, 2, 3]])) == 1.0
    assert ann.recall_at_k(np.array([[1, -1, -1]]), np.array([[1, 2, 3]])) == pytest.approx(1 / 3)


def test_check_recall_at_k_accepts_the_reference_and_explains_mistakes(capsys):
    lesson09.check_recall_at_k(copy_of(ann.recall_at_k))
    assert "✓" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="position by position"):
        lesson09.check_recall_at_k(lambda found, exact: float((found == exact).mean()))
    with pytest.raises(AssertionError, match="not implemented"):
        lesson09.check_recall_at_k(lambda found, exact: (_ for _ in ()).throw(NotImplementedError()))
