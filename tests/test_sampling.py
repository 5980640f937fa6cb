"""Lesson 06's sampling module: positive pairs against loops and simulation, PML's constraints as clear errors,
seeded samplers, long-tailed data and the balanced sampler (the exercises' checks are tested in
test_checks_lesson06.py)."""
import itertools

import matplotlib
import numpy as np
import pytest
import torch
from pytorch_metric_learning import samplers
from pytorch_metric_learning.utils import common_functions as pml_common
from torch import nn
from torch.utils.data import TensorDataset

from course_utils import evaluation, sampling

matplotlib.use("Agg")


def toy_set(sizes=(12, 9, 7, 5, 3)):
    labels = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return TensorDataset(torch.arange(len(labels)).float()[:, None], labels)


# ---------------------------------------------------------------- positive pairs


def test_positive_pairs_and_lonely_anchors_match_loops():
    labels = torch.tensor([3, 1, 3, 3, 0, 1, 2])
    n = len(labels)
    assert sampling.positive_pairs(labels) == sum(labels[i] == labels[j] for i in range(n) for j in range(i + 1, n))
    lonely = sum(all(labels[j] != labels[i] for j in range(n) if j != i) for i in range(n)) / n
    assert sampling.anchors_without_positive(labels) == pytest.approx(lonely)


def test_expected_positive_pairs_matches_simulation():
    sizes = [30, 20, 10, 5]
    labels = torch.repeat_interleave(torch.arange(4), torch.tensor(sizes))
    gen = torch.Generator().manual_seed(0)
    draws = [sampling.positive_pairs(labels[torch.randperm(len(labels), generator=gen)[:16]]) for _ in range(4000)]
    assert np.mean(draws) == pytest.approx(sampling.expected_positive_pairs(16, sizes), rel=0.02)
    assert sampling.expected_positive_pairs(64, [60] * 100) == pytest.approx(2016 * 59 / 5999)


@pytest.mark.parametrize("m, batch_size", [(2, 8), (4, 12), (3, 9)])
def test_m_per_class_positive_pairs_match_pml_batches(m, batch_size):
    labels = toy_set().tensors[1]
    indices = list(samplers.MPerClassSampler(labels, m, batch_size, 10 * batch_size))
    for start in range(0, len(indices), batch_size):
        batch = labels[indices[start:start + batch_size]]
        assert sampling.positive_pairs(batch) == sampling.m_per_class_positive_pairs(batch_size, m)


# ---------------------------------------------------------------- PML's constraints, seeded loaders


@pytest.mark.parametrize("settings, message", [
    (dict(m=3, batch_size=8, length_before_new_iter=40), "batch_size=6 or 9"),
    (dict(m=2, batch_size=12, length_before_new_iter=40), r"batch_size <= 10 \(a multiple of m\), or m=3"),
    (dict(m=2, batch_size=8, length_before_new_iter=6), "an epoch would hold no batch"),
    (dict(m=2, batch_size=8, length_before_new_iter=40, shuffle=True), "Leave shuffle=False"),
])
def test_loader_names_the_fix(settings, message):
    with pytest.raises(ValueError, match=message):
        sampling.m_per_class_loader(toy_set(), seed=0, **settings)


def test_loader_rejects_exactly_what_pml_rejects():
    labels = toy_set().tensors[1]
    for m, batch_size, length in itertools.product((1, 2, 3, 4, 5), (4, 6, 8, 10, 12, 15, 20, 30), (5, 40)):
        try:
            samplers.MPerClassSampler(labels, m, batch_size, length)
            pml_ok = True
        except AssertionError:
            pml_ok = False
        try:
            sampling.validate_m_per_class(labels, m, batch_size, length)
            ours_ok = True
        except ValueError:
            ours_ok = False
        assert ours_ok == pml_ok, (m, batch_size, length)


def test_loader_batches_and_epoch_length():
    loader = sampling.m_per_class_loader(toy_set(), m=2, batch_size=6, length_before_new_iter=40, seed=0)
    assert len(loader.sampler) == 36 and len(loader) == 6
    for _, labels in loader:
        assert len(labels) == 6 and labels.bincount()[labels.unique()].tolist() == [2, 2, 2]


def epochs_of(loader, num_epochs=2):
    return [labels.tolist() for labels in sampling.batch_labels(loader, num_epochs)]


def test_seeded_loader_is_reproducible_and_leaves_numpy_alone():
    make = lambda seed: sampling.m_per_class_loader(toy_set(), 2, 6, 40, seed)
    np.random.seed(0)
    state = np.random.get_state()[1].copy()
    first = epochs_of(make(0))
    assert np.array_equal(np.random.get_state()[1], state), "the global NumPy generator was used"
    assert pml_common.NUMPY_RANDOM is np.random, "PML's generator was not put back"
    np.random.rand(3)
    assert epochs_of(make(0)) == first
    assert epochs_of(make(1)) != first
    assert first[:6] != first[6:], "two epochs should differ"


def test_pml_alone_depends_on_numpy_global_state():
    """Why the course seeds the sampler itself."""
    labels = toy_set().tensors[1]
    runs = []
    for extra_draws in (0, 1):
        np.random.seed(0)
        np.random.rand(extra_draws)
        runs.append(list(samplers.MPerClassSampler(labels, 2, 6, 36)))
    assert runs[0] != runs[1]


# ---------------------------------------------------------------- long-tailed data


def test_long_tailed_sizes_and_subset():
    sizes = sampling.long_tailed_sizes(1000, 50, (0, 1, 3, 2, 4))
    values = list(sizes.values())
    assert list(sizes) == [0, 1, 3, 2, 4] and values == sorted(values, reverse=True)
    assert values[0] == 1000 and values[-1] == 20 and values[0] / values[-1] >= 50
    ratios = [a / b for a, b in zip(values, values[1:])]
    assert max(ratios) - min(ratios) < 0.1, "geometric: the same factor from class to class"
    dataset = toy_set((40, 40, 40))
    subset = sampling.long_tailed(dataset, {2: 30, 0: 5}, seed=1)
    assert subset.tensors[1].bincount().tolist() == [5, 0, 30]
    original = set(dataset.tensors[0].flatten().tolist())
    assert set(subset.tensors[0].flatten().tolist()) <= original
    with pytest.raises(ValueError, match="fewer than"):
        sampling.long_tailed(dataset, {0: 41})


def test_class_shares():
    shares = sampling.class_shares([torch.tensor([0, 0, 1]), torch.tensor([2, 0, 0])], (0, 1, 2))
    assert shares == pytest.approx({0: 4 / 6, 1: 1 / 6, 2: 1 / 6})


# ---------------------------------------------------------------- the balanced sampler


@pytest.mark.parametrize("t", [0.0, 0.5, 1.0])
def test_inclusion_probabilities_match_torch_multinomial(t):
    counts = torch.tensor([50, 20, 8, 3])
    exact = sampling.inclusion_probabilities(counts, 2, t)
    assert exact.sum().item() == pytest.approx(2)
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([torch.multinomial(counts.double() ** t, 2, generator=gen) for _ in range(20000)])
    measured = torch.stack([(draws == c).any(1) for c in range(4)], 1).double().mean(0)
    assert torch.allclose(measured, exact, atol=0.015)
    if t == 0:
        assert torch.allclose(exact, torch.full((4,), 0.5, dtype=torch.float64))


def test_class_balanced_batches_structure_and_frequencies():
    labels = toy_set((60, 30, 10, 3)).tensors[1]
    batches = sampling.class_balanced_batches(labels, 4, 8, 3000, t=0.5, seed=0)
    assert batches.shape == (3000, 8)
    for batch in batches[:200]:
        classes, per_class = labels[batch].unique(return_counts=True)
        assert len(classes) == 2 and per_class.tolist() == [4, 4]
    drawn = torch.stack([torch.isin(torch.arange(4), labels[b]) for b in batches]).double().mean(0)
    assert torch.allclose(drawn, sampling.inclusion_probabilities([60, 30, 10, 3], 2, 0.5), atol=0.03)
    assert torch.equal(batches, sampling.class_balanced_batches(labels, 4, 8, 3000, t=0.5, seed=0))


def test_class_balanced_sampler_epochs():
    labels = toy_set().tensors[1]
    make = lambda: sampling.ClassBalancedSampler(labels, 2, 6, 40, t=0.5, seed=3)
    sampler = make()
    assert len(sampler) == 36
    first, second = list(sampler), list(sampler)
    assert first != second and list(make()) == first
    with pytest.raises(ValueError, match="multiple of m"):
        sampling.ClassBalancedSampler(labels, 4, 6, 40, t=0.5)


def test_class_balanced_sampler_at_t0_draws_like_mperclasssampler():
    labels = toy_set((40, 20, 10, 5, 3)).tensors[1]
    ours = labels[list(sampling.ClassBalancedSampler(labels, 2, 6, 6000, t=0.0, seed=0))].bincount() / 6000
    np.random.seed(0)
    pml = labels[list(samplers.MPerClassSampler(labels, 2, 6, 6000))].bincount() / 6000
    assert torch.allclose(ours, pml, atol=0.02) and torch.allclose(ours, torch.full((5,), 0.2), atol=0.02)


# ---------------------------------------------------------------- evaluation and tables


def test_per_class_metrics_average_to_pml_overall():
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    embeddings = torch.randn(60, 4, generator=gen) + labels[:, None]
    per_class = sampling.per_class_metrics(embeddings, labels)
    overall = evaluation.retrieval_metrics(embeddings, labels, distance="cosine")
    for metric in evaluation.METRICS:
        assert np.mean([per_class[c][metric] for c in range(3)]) == pytest.approx(overall[metric], abs=1e-6)


def test_long_tail_results_rare_split_uses_only_rare_queries():
    gen = torch.Generator().manual_seed(1)
    labels = torch.arange(40) % 4
    images = torch.randn(40, 1, 2, 2, generator=gen) + labels[:, None, None, None]
    test_sets = {"seen": TensorDataset(images, labels), "unseen": TensorDataset(images, labels)}
    table = sampling.long_tail_results({"pixels": nn.Flatten()}, test_sets, rare=(2, 3), device="cpu")["pixels"]
    embeddings = images.flatten(1)
    per_class = sampling.per_class_metrics(embeddings, labels)
    assert table["rare"]["map_r"] == pytest.approx((per_class[2]["map_r"] + per_class[3]["map_r"]) / 2)
    assert table["seen"]["map_r"] == pytest.approx(table["unseen"]["map_r"], abs=1e-6)
    assert set(table["per class"]) == {"T-shirt/top", "Trouser", "Pullover", "Dress"}
    unit = torch.nn.functional.normalize(embeddings, dim=1)
    cos = unit @ unit.T
    assert table["seen"]["mean_cos"] == pytest.approx(((cos.sum() - cos.trace()) / (40 * 39)).item(), abs=1e-5)


def test_mean_cosine_of_a_collapsed_embedding_is_one():
    assert sampling.mean_cosine(torch.ones(5, 3) + 1e-6 * torch.randn(5, 3)) == pytest.approx(1, abs=1e-4)
    assert sampling.mean_cosine(torch.eye(4)) == pytest.approx(0)


def test_splits_of():
    row = {"seen": {"map_r": 0.5, "map_r_std": 0.01}, "rare": {"map_r": 0.25, "map_r_std": 0.02},
           "per class": {"Coat": 0.1}}
    assert sampling.splits_of({"random": row}, ("seen",)) == {"random": {"seen": row["seen"]}}


def test_figures_are_labelled():
    fig = sampling.positive_pairs_plot(64, {"random": (100, [18, 22])}, ms=(4,))
    ax = fig.axes[0]
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title() and ax.get_legend()
    fig = sampling.class_share_plot({"data": {0: 0.9, 1: 0.1}}, {0: 90, 1: 10})
    assert fig.axes[0].get_ylabel() and fig.axes[0].get_legend()
    row = {"per class": {"T-shirt/top": 0.8, "Trouser": 0.4}}
    fig = sampling.per_class_plot({"random": row}, {0: 90, 1: 10})
    assert fig.axes[0].get_xlabel() and fig.axes[0].get_legend()
