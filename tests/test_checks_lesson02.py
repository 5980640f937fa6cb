"""Lesson 02's exercise check accepts a right contrastive loss and rejects typical mistakes."""
import pytest
import torch
from loss_references import contrastive

from course_utils.checks import lesson02


def test_right_answer_passes(capsys):
    lesson02.check_contrastive_loss(contrastive)
    assert capsys.readouterr().out.count("✓") == 1


@pytest.mark.parametrize("mistake", [
    dict(sign=-1), dict(normalize=False), dict(reduce=torch.mean), dict(together=True)],
    ids=["margin sign", "no normalisation", "mean over all", "one average for both"])
def test_contrastive_check_rejects(mistake):
    with pytest.raises(AssertionError, match="expected .* \\(PML\\)"):
        lesson02.check_contrastive_loss(lambda e, l, **kw: contrastive(e, l, **kw, **mistake))


def test_contrastive_check_rejects_wrong_defaults():
    with pytest.raises(AssertionError, match="default arguments"):
        lesson02.check_contrastive_loss(
            lambda e, l, pos_margin=0.0, neg_margin=0.5: contrastive(e, l, pos_margin, neg_margin))


@pytest.mark.parametrize("wrong, diagnosis", [
    (lambda e, l, **kw: contrastive(e, l, **kw, normalize=False), "not L2-normalised"),
    (lambda e, l, **kw: contrastive(e, l, **kw, reduce=torch.mean), "over all pairs"),
])
def test_check_names_the_exact_mistake(wrong, diagnosis):
    with pytest.raises(AssertionError, match=f"exactly what you get if .*{diagnosis}"):
        lesson02.check_contrastive_loss(wrong)
