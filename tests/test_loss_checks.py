"""The loss exercises' checks (lessons 02-04) accept a right implementation and reject typical mistakes."""
import pytest
import torch
import torch.nn.functional as F

from course_utils import exercises


def masks(labels, include_self=False):
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool)
    return (same if include_self else same & ~eye), ~same


def distances(embeddings, normalize=True):
    x = F.normalize(embeddings, dim=1) if normalize else embeddings
    return torch.cdist(x, x)


def avg_nonzero(values):
    nonzero = values > 0
    return values[nonzero].sum() / nonzero.sum() if nonzero.any() else values.sum() * 0


def contrastive(embeddings, labels, pos_margin=0.0, neg_margin=1.0, normalize=True, reduce=avg_nonzero,
                sign=1, together=False):
    d = distances(embeddings, normalize)
    pos, neg = masks(labels)
    pos_terms = F.relu(d[pos] - pos_margin)
    neg_terms = F.relu(sign * (neg_margin - d[neg]))
    if together:
        return reduce(torch.cat([pos_terms, neg_terms]))
    return reduce(pos_terms) + reduce(neg_terms)


def triplet(embeddings, labels, margin=0.05, normalize=True, reduce=avg_nonzero, sign=1, include_self=False):
    d = distances(embeddings, normalize)
    pos, neg = masks(labels, include_self)
    a, p, n = torch.where(pos[:, :, None] & neg[:, None, :])
    return reduce(F.relu(sign * (d[a, p] - d[a, n]) + margin))


def circle(embeddings, labels, m=0.4, gamma=80, normalize=True, include_self=False, all_anchors=False,
           detach=True, euclidean=False):
    x = F.normalize(embeddings, dim=1) if normalize else embeddings
    s = -torch.cdist(x, x) if euclidean else x @ x.T
    pos, neg = masks(labels, include_self)
    w = s.detach() if detach else s
    logit_p = (-gamma * F.relu(1 + m - w) * (s - (1 - m))).masked_fill(~pos, float("-inf"))
    logit_n = (gamma * F.relu(w + m) * (s - m)).masked_fill(~neg, float("-inf"))
    loss = F.softplus(torch.logsumexp(logit_p, 1) + torch.logsumexp(logit_n, 1))
    valid = pos.any(1) & neg.any(1)
    return loss.nan_to_num(0, 0, 0).mean() if all_anchors else loss[valid].mean()


def test_right_answers_pass(capsys):
    exercises.check_contrastive_loss(contrastive)
    exercises.check_triplet_loss(triplet)
    exercises.check_circle_loss(circle)
    assert capsys.readouterr().out.count("✓") == 3


@pytest.mark.parametrize("mistake", [
    dict(sign=-1), dict(normalize=False), dict(reduce=torch.mean), dict(together=True)],
    ids=["margin sign", "no normalisation", "mean over all", "one average for both"])
def test_contrastive_check_rejects(mistake):
    with pytest.raises(AssertionError, match="expected .* \\(PML\\)"):
        exercises.check_contrastive_loss(lambda e, l, **kw: contrastive(e, l, **kw, **mistake))


def test_contrastive_check_rejects_wrong_defaults():
    with pytest.raises(AssertionError, match="default arguments"):
        exercises.check_contrastive_loss(lambda e, l, pos_margin=0.0, neg_margin=0.5: contrastive(e, l, pos_margin, neg_margin))


@pytest.mark.parametrize("mistake", [
    dict(sign=-1), dict(normalize=False), dict(reduce=torch.mean), dict(include_self=True)],
    ids=["margin sign", "no normalisation", "mean over all", "anchor as its own positive"])
def test_triplet_check_rejects(mistake):
    with pytest.raises(AssertionError, match="expected"):
        exercises.check_triplet_loss(lambda e, l, **kw: triplet(e, l, **kw, **mistake))


def test_triplet_check_rejects_the_wrong_default_margin():
    with pytest.raises(AssertionError, match="0.05"):
        exercises.check_triplet_loss(lambda e, l, margin=0.2: triplet(e, l, margin))


@pytest.mark.parametrize("mistake", [
    dict(normalize=False), dict(include_self=True), dict(all_anchors=True), dict(euclidean=True)],
    ids=["no normalisation", "anchor as its own positive", "mean over all anchors", "Euclidean distance"])
def test_circle_check_rejects(mistake):
    with pytest.raises(AssertionError, match="expected"):
        exercises.check_circle_loss(lambda e, l, **kw: circle(e, l, **kw, **mistake))


def test_circle_check_catches_missing_detach_through_the_gradient():
    with pytest.raises(AssertionError, match=r"gradient differs.*sim\.detach\(\)"):
        exercises.check_circle_loss(lambda e, l, **kw: circle(e, l, **kw, detach=False))


@pytest.mark.parametrize("check", [exercises.check_contrastive_loss, exercises.check_triplet_loss,
                                   exercises.check_circle_loss])
def test_stub_and_non_tensor_are_rejected(check):
    def stub(embeddings, labels, **kwargs):
        raise NotImplementedError()

    with pytest.raises(AssertionError, match="not implemented"):
        check(stub)
    with pytest.raises(AssertionError, match="scalar tensor"):
        check(lambda e, l, **kw: 0.5)


@pytest.mark.parametrize("check, wrong, diagnosis", [
    (exercises.check_contrastive_loss, lambda e, l, **kw: contrastive(e, l, **kw, normalize=False), "not L2-normalised"),
    (exercises.check_contrastive_loss, lambda e, l, **kw: contrastive(e, l, **kw, reduce=torch.mean), "over all pairs"),
    (exercises.check_triplet_loss, lambda e, l, **kw: triplet(e, l, **kw, normalize=False), "not L2-normalised"),
    (exercises.check_triplet_loss, lambda e, l, **kw: triplet(e, l, **kw, reduce=torch.mean), "over all triplets"),
    (exercises.check_triplet_loss, lambda e, l, margin=0.2: triplet(e, l, margin), "default margin is 0.2"),
    (exercises.check_circle_loss, lambda e, l, **kw: circle(e, l, **kw, all_anchors=True), "over all anchors"),
])
def test_checks_name_the_exact_mistake(check, wrong, diagnosis):
    with pytest.raises(AssertionError, match=f"exactly what you get if .*{diagnosis}"):
        check(wrong)
