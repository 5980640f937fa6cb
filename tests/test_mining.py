"""Lesson 05's mining helpers: counts against PML and naive loops (the exercises' checks are tested in
test_checks_lesson05.py)."""
import matplotlib
import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses, miners
from pytorch_metric_learning.reducers import MeanReducer

from course_utils import lesson, mining

matplotlib.use("Agg")


def random_batch(seed=0, n=32, dim=8, classes=4):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=gen), (torch.arange(n) % classes)[torch.randperm(n, generator=gen)]


def test_mined_counts_match_the_miners():
    embeddings, labels = random_batch()
    ms = miners.MultiSimilarityMiner(epsilon=0.1)
    a1, p, a2, n = ms(embeddings, labels)
    assert mining.mined_pairs(ms)(embeddings, labels) == {"positive": len(a1), "negative": len(a2)}
    assert mining.mined_count(ms)(embeddings, labels) == len(a1) + len(a2)
    tm = miners.TripletMarginMiner(margin=0.05, type_of_triplets="semihard")
    assert mining.mined_count(tm)(embeddings, labels) == len(tm(embeddings, labels)[0])


def test_batch_pairs_matches_pml():
    from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

    _, labels = random_batch(5, n=20, classes=3)
    a1, _, a2, _ = lmu.get_all_pairs_indices(labels)
    assert mining.batch_pairs(None, labels) == {"positive": len(a1), "negative": len(a2)}


def test_triplet_census_matches_pml_miners_and_loss():
    embeddings, labels = random_batch(1)
    census = mining.triplet_census(0.05)(embeddings, labels)
    for kind in ("all", "semihard", "hard", "easy"):
        mined = miners.TripletMarginMiner(margin=0.05, type_of_triplets=kind)(embeddings, labels)
        assert census[kind] == len(mined[0]), kind
    total = len(miners.TripletMarginMiner(margin=10, type_of_triplets="all")(embeddings, labels)[0])
    assert census["zero-loss fraction"] == pytest.approx(census["easy"] / total)
    easy = miners.TripletMarginMiner(margin=0.05, type_of_triplets="easy")(embeddings, labels)
    assert losses.TripletMarginLoss(margin=0.05)(embeddings, labels, easy).item() == 0


def test_gradient_with_a_mean_over_all_is_the_nonzero_gradient_times_the_active_share():
    """The identity lesson 05 uses to draw the MeanReducer's gradient from AvgNonZeroReducer's."""
    embeddings, labels = random_batch(3)
    nonzero = mining.gradient_norm(losses.TripletMarginLoss(margin=0.05))(embeddings, labels)
    over_all = mining.gradient_norm(losses.TripletMarginLoss(margin=0.05, reducer=MeanReducer()))(embeddings, labels)
    active = 1 - mining.triplet_census(0.05)(embeddings, labels)["zero-loss fraction"]
    assert float(over_all) == pytest.approx(float(nonzero) * active, rel=1e-4)


def test_triplet_margin_of_batch_hard_is_the_hardest():
    from pytorch_metric_learning.distances import LpDistance

    embeddings, labels = random_batch(6, n=12, classes=3)
    d = LpDistance()(embeddings)
    same = labels[:, None] == labels[None, :]
    hardest_pos = d.masked_fill(~same | torch.eye(12, dtype=torch.bool), -1).amax(1)
    hardest_neg = d.masked_fill(same, 9).amin(1)
    expected = (hardest_neg - hardest_pos).mean().item()
    margin = mining.triplet_margin(miners.BatchHardMiner())(embeddings, labels)
    assert float(margin) == pytest.approx(expected, rel=1e-5)


def test_mean_distance_and_unit_embedder():
    from torch.utils.data import TensorDataset

    budget = lesson.QUICK
    images = torch.randn(6, 1, 28, 28)
    plain, unit = lesson.new_embedder(budget), mining.unit_embedder(budget)
    unit.load_state_dict(plain.state_dict())
    plain.eval(), unit.eval()
    with torch.no_grad():
        assert torch.allclose(unit(images), F.normalize(plain(images), dim=1), atol=1e-6)
        x = F.normalize(plain(images), dim=1)
    loop = sum((x[i] - x[j]).norm().item() for i in range(6) for j in range(6) if i != j) / 30
    dataset = TensorDataset(images, torch.zeros(6, dtype=torch.long))
    assert mining.mean_distance(plain, dataset, "cpu") == pytest.approx(loop, rel=1e-5)


def test_unit_embedder_starts_from_the_same_weights_as_new_embedder():
    budget = lesson.QUICK
    torch.manual_seed(3)
    plain = lesson.new_embedder(budget).state_dict()
    torch.manual_seed(3)
    unit = mining.unit_embedder(budget).state_dict()
    assert list(plain) == list(unit) and all(torch.equal(plain[k], unit[k]) for k in plain)
    assert mining.changed_tensors(plain, unit) == []
    unit["embedder.bias"] = unit["embedder.bias"] + 1
    assert mining.changed_tensors(plain, unit) == ["embedder.bias"]


def test_batch_log_and_means():
    on_batch, log = mining.batch_log({"size": lambda e, l: len(l), "sim": lambda e, l: e.sum(),
                                      "pairs": mining.batch_pairs})
    for seed in range(12):
        on_batch(*random_batch(seed, n=8 + seed))
    assert log["size"] == [float(8 + s) for s in range(12)]
    assert set(log) == {"size", "sim", "pairs positive", "pairs negative"} and len(log["pairs negative"]) == 12
    first, last = mining.means(log, first=2)["size"]
    assert (first, last) == (8.5, 18.5)


def test_initial_state_is_what_compare_starts_from():
    budget = lesson.QUICK
    a, b = mining.initial_state(budget, 1), mining.initial_state(budget, 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = mining.initial_state(budget, 2)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_figures_draw_pml_choices():
    import matplotlib.pyplot as plt

    angles = torch.deg2rad(torch.tensor([0.0, 12, 35, 70, 105, 40, 60, 95, 140, -45, -80, -120, 170]))
    toy = torch.stack([angles.cos(), angles.sin()], 1)
    labels = torch.tensor([0] * 5 + [1] * 4 + [2] * 4)
    miner = miners.MultiSimilarityMiner(epsilon=0.1)
    fig, axes = plt.subplots(1, 2)
    mining.pairs_on_circle(axes[0], toy, labels, 0, miner)
    mining.ms_rule(axes[1], toy, labels, 0, miner)
    sim, pairs = mining._anchor_pairs(toy, labels, 0, miner)
    assert pairs["positive"][1] == {2, 3, 4} and pairs["negative"][1] == {5, 6, 7, 9, 10}
    assert axes[1].get_xlabel().startswith("cosine similarity") and axes[0].get_legend() is not None
    fig = mining.per_batch({"a": [1.0, 2.0]}, ["a"], title="t", ylabel="y")
    assert fig.axes[0].get_xlabel() == "training batch"
    plt.close("all")
