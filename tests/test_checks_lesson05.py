"""Lesson 05's exercise checks: the ms_mine check accepts a right answer and names each typical mistake; the
epsilon experiment's check."""
import math

import pytest
import torch
import torch.nn.functional as F
from reference_copies import MultiSimilarityCopy

from course_utils.checks import lesson05


def ms_loop(embeddings, labels, epsilon=0.1, similarity="cosine", reverse=False, include_self=False,
            global_hardest=False, sign=1, easiest=False):
    """The Multi-Similarity rule as a naive loop over anchors, with switches for the typical mistakes."""
    x = F.normalize(embeddings, dim=1) if similarity == "cosine" else embeddings
    if similarity == "euclidean":
        sim = torch.cdist(F.normalize(embeddings, dim=1), F.normalize(embeddings, dim=1))
    else:
        sim = x @ x.T
    n = len(labels)
    pos_of = [[j for j in range(n) if labels[j] == labels[i] and (include_self or j != i)] for i in range(n)]
    neg_of = [[j for j in range(n) if labels[j] != labels[i]] for i in range(n)]
    pick = (max, min) if easiest else (min, max)
    all_pos = [sim[i, j].item() for i in range(n) for j in pos_of[i]]
    all_neg = [sim[i, j].item() for i in range(n) for j in neg_of[i]]
    a1, p, a2, neg = [], [], [], []
    for i in range(n):
        sims_p, sims_n = [sim[i, j].item() for j in pos_of[i]], [sim[i, j].item() for j in neg_of[i]]
        if global_hardest:
            hard_p, hard_n = min(all_pos), max(all_neg)
        else:
            hard_p = pick[0](sims_p) if sims_p else (-math.inf if easiest else math.inf)
            hard_n = pick[1](sims_n) if sims_n else (math.inf if easiest else -math.inf)
        for j, s in zip(neg_of[i], sims_n):
            if (s < hard_p - sign * epsilon) if reverse else (s > hard_p - sign * epsilon):
                a2.append(i), neg.append(j)
        for j, s in zip(pos_of[i], sims_p):
            if (s > hard_n + sign * epsilon) if reverse else (s < hard_n + sign * epsilon):
                a1.append(i), p.append(j)
    return tuple(torch.tensor(v, dtype=torch.long) for v in (a1, p, a2, neg))


def test_right_answer_passes(capsys):
    lesson05.check_ms_mine(ms_loop)
    assert "✓" in capsys.readouterr().out


def test_pml_itself_passes(capsys):
    lesson05.check_ms_mine(lambda e, l, epsilon=0.1: MultiSimilarityCopy(epsilon=epsilon)(e, l))
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("mistake, message", [
    (dict(reverse=True), "the inequalities are reversed"),
    (dict(similarity="euclidean"), "Euclidean distance instead of cosine similarity"),
    (dict(similarity="dot"), "not L2-normalised"),
    (dict(include_self=True), "paired with itself"),
    (dict(global_hardest=True), "global hardest positive and negative"),
    (dict(sign=-1), "epsilon has the wrong sign"),
    (dict(easiest=True), "LEAST similar positive"),
], ids=["reversed", "distance", "not normalised", "self pairs", "global hardest", "epsilon sign", "easiest"])
def test_check_names_the_mistake(mistake, message):
    with pytest.raises(AssertionError, match=message):
        lesson05.check_ms_mine(lambda e, l, epsilon=0.1: ms_loop(e, l, epsilon, **mistake))


def without_self_pairs(e, l, epsilon=0.1):
    """The diagonal left out of the pairs returned but still counted in each anchor's hardest positive."""
    a1, p, a2, n = ms_loop(e, l, epsilon, include_self=True)
    keep = a1 != p
    return a1[keep], p[keep], a2, n


def test_self_in_the_hardest_positive_only_is_named():
    with pytest.raises(AssertionError, match="paired with itself.*hardest positive"):
        lesson05.check_ms_mine(without_self_pairs)


def test_pml_with_a_distance_is_named():
    from pytorch_metric_learning.distances import LpDistance

    with pytest.raises(AssertionError, match="Euclidean distance instead"):
        lesson05.check_ms_mine(
            lambda e, l, epsilon=0.1: MultiSimilarityCopy(epsilon, distance=LpDistance())(e, l))


def test_every_mistake_differs_from_the_right_answer_on_some_batch():
    for index in range(len(lesson05._mistakes(*next(lesson05._mining_batches())[:2], 0.1))):
        differs = [False, False]
        for embeddings, labels, epsilon in lesson05._mining_batches():
            expected = lesson05._pml_sets(embeddings, labels, epsilon or 0.1)
            wrong = lesson05._mistakes(embeddings, labels, epsilon or 0.1)[index][1]
            differs = [d or w != e for d, w, e in zip(differs, wrong, expected)]
        assert any(differs), lesson05._mistakes(embeddings, labels, 0.1)[index][0]


def test_no_pair_sits_on_a_threshold():
    """Float rounding can't flip a pair of the check's batches: every similarity is 1e-6 away from its threshold."""
    for embeddings, labels, epsilon in lesson05._mining_batches():
        epsilon = epsilon or 0.1
        unit = F.normalize(embeddings, dim=1)
        sim = unit @ unit.T
        same = labels[:, None] == labels[None, :]
        pos = same & ~torch.eye(len(labels), dtype=torch.bool)
        hard_p = sim.masked_fill(~pos, math.inf).amin(1, keepdim=True)
        hard_n = sim.masked_fill(same, -math.inf).amax(1, keepdim=True)
        gaps = torch.cat([(sim - hard_p + epsilon)[~same], (sim - hard_n - epsilon)[pos]]).abs()
        assert gaps.min() > 1e-6


@pytest.mark.parametrize("wrong, message", [
    (lambda e, l, epsilon=0.1: ms_loop(e, l, epsilon)[:2], "four index tensors"),
    (lambda e, l, epsilon=0.1: tuple(t.float() for t in ms_loop(e, l, epsilon)), "tensor of indices"),
    (lambda e, l, epsilon=0.1: ms_loop(e, l, epsilon)[2:] + ms_loop(e, l, epsilon)[:2], "positive pairs first"),
    (lambda e, l, epsilon=0.1: tuple(torch.cat([t, t]) for t in ms_loop(e, l, epsilon)), "returned twice"),
    (lambda e, l, epsilon=0.3: ms_loop(e, l, epsilon), "default epsilon"),
    (lambda e, l, epsilon=0.1: ms_loop(e, l, epsilon / 2), "For example"),
])
def test_check_rejects_wrong_formats_and_values(wrong, message):
    with pytest.raises(AssertionError, match=message):
        lesson05.check_ms_mine(wrong)


def test_stub_is_reported():
    def stub(embeddings, labels, epsilon=0.1):
        raise NotImplementedError()

    with pytest.raises(AssertionError, match="not implemented"):
        lesson05.check_ms_mine(stub)


def test_epsilon_experiment_check():
    table = {"epsilon=0.5": {s: {"p1": 0.5, "r_precision": 0.4, "map_r": 0.3} for s in ("seen", "unseen")}}
    lesson05.check_epsilon_experiment((table, 1234.0), 0.5, 128)
    with pytest.raises(AssertionError, match="between 0 and"):
        lesson05.check_epsilon_experiment((table, -1), 0.5, 128)
    with pytest.raises(AssertionError, match="no row"):
        lesson05.check_epsilon_experiment((table, 10), 0.2, 128)
    with pytest.raises(AssertionError, match="two things"):
        lesson05.check_epsilon_experiment(table, 0.5, 128)


def test_a_mistake_on_one_kind_of_pairs_is_named():
    """Right positive pairs, negative pairs with the inequality reversed: the message names the negatives' mistake."""
    def negatives_reversed(e, l, epsilon=0.1):
        a1, p, _, _ = ms_loop(e, l, epsilon)
        _, _, a2, n = ms_loop(e, l, epsilon, reverse=True)
        return a1, p, a2, n

    with pytest.raises(AssertionError, match="your negative pairs differ.*inequalities are reversed"):
        lesson05.check_ms_mine(negatives_reversed)
