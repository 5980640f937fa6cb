"""Lesson 10's "no match" threshold against naive loops over pairs and thresholds."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from course_utils.own_images import verify


@pytest.fixture
def held_out():
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(30) % 5
    centres = torch.randn(5, 8, generator=gen)
    return centres[labels] + 0.8 * torch.randn(30, 8, generator=gen), labels


def naive_pairs(embeddings, labels):
    pos, neg = [], []
    for i, j in itertools.combinations(range(len(labels)), 2):
        s = float(F.cosine_similarity(embeddings[i], embeddings[j], dim=0))
        (pos if labels[i] == labels[j] else neg).append(s)
    return pos, neg


def test_pair_similarities_are_every_pair_once(held_out):
    positives, negatives = verify.pair_similarities(*held_out)
    pos, neg = naive_pairs(*held_out)
    assert torch.allclose(positives.sort().values, torch.tensor(sorted(pos)), atol=1e-5)
    assert torch.allclose(negatives.sort().values, torch.tensor(sorted(neg)), atol=1e-5)


def test_curve_counts_matches_at_each_threshold(held_out):
    pos, neg = naive_pairs(*held_out)
    c = verify.curve(torch.tensor(pos), torch.tensor(neg))
    for i in range(0, len(c["threshold"]), 37):
        t = float(c["threshold"][i])
        true_pos, declared = sum(s >= t for s in pos), sum(s >= t for s in pos + neg)
        assert c["precision"][i] == pytest.approx(true_pos / declared, abs=1e-6)
        assert c["recall"][i] == pytest.approx(true_pos / len(pos), abs=1e-6)


@pytest.mark.parametrize("fmr", verify.FMRS)
def test_fnmr_at_fmr(held_out, fmr):
    pos, neg = naive_pairs(*held_out)
    threshold, fnmr = verify.fnmr_at_fmr(torch.tensor(pos), torch.tensor(neg), fmr)
    assert sum(s >= threshold for s in neg) <= fmr * len(neg)
    assert sum(s >= threshold - 2e-6 for s in neg) > fmr * len(neg) - 1  # no lower threshold would do
    assert fnmr == pytest.approx(sum(s < threshold for s in pos) / len(pos))


def test_calibration_separates_separable_pairs_halfway():
    embeddings = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    c = verify.calibrate(embeddings, torch.tensor([0, 0, 1, 1]))
    best_negative, worst_positive = float(F.cosine_similarity(embeddings[1], embeddings[3], dim=0)), \
        float(F.cosine_similarity(embeddings[0], embeddings[1], dim=0))
    assert c["f1"] == 1.0 and c["threshold"] == pytest.approx((best_negative + worst_positive) / 2)


def test_decide_and_open_set():
    similarity = torch.tensor([0.9, 0.4, 0.8, 0.2])
    correct, known = torch.tensor([True, True, False, False]), torch.tensor([True, True, True, False])
    assert verify.decide(similarity, 0.5).tolist() == [True, False, True, False]
    result = verify.open_set(similarity, correct, known, 0.5)
    assert result["known_answered_right"] == pytest.approx(1 / 3) and result["unknown_rejected"] == 1.0
    assert verify.threshold_of({"threshold": 0.7, "at_fmr": {"0.001": {"threshold": 0.9}}}, "fmr=1e-3") == 0.9
    assert verify.threshold_of(None, "0.3") == 0.3 and verify.threshold_of({"threshold": 0.7}, "none") is None


def test_nearest_scores_against_a_loop(held_out):
    embeddings, labels = held_out
    names = [f"c{int(c)}" for c in labels]
    positives, negatives = verify.nearest_scores(embeddings[:10], names[:10], embeddings[10:], names[10:])
    expected = {True: [], False: []}
    for q in range(10):
        sims = [float(F.cosine_similarity(embeddings[q], embeddings[g], dim=0)) for g in range(10, 30)]
        g = max(range(20), key=sims.__getitem__)
        expected[names[q] == names[10 + g]].append(sims[g])
    assert sorted(positives.tolist()) == pytest.approx(sorted(expected[True]), abs=1e-5)
    assert sorted(negatives.tolist()) == pytest.approx(sorted(expected[False]), abs=1e-5)


def test_summary_shows_thresholds_near_1_apart_and_flags_an_fmr_on_few_negatives():
    positives = torch.tensor([0.9995, 0.9993, 0.9991, 0.9990])
    negatives = torch.linspace(0.9950, 0.9989, 500)
    text = verify.summary(verify.calibrate_scores(positives, negatives))
    assert "threshold 0.9990" in text and "threshold 1.000" not in text  # four decimals: not all printed as 1.000
    fmr_3, fmr_2 = text.splitlines()[1].split("), ")
    assert "rough: 0.5 of 500 negatives" in fmr_3 and "rough" in fmr_2  # 5 negatives for FMR 1e-2: still rough
    many = verify.summary(verify.calibrate_scores(positives, torch.linspace(0.1, 0.9, 20000)))
    assert "rough" not in many
