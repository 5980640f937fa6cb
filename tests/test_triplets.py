import matplotlib.pyplot as plt
import pytest
import torch
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.miners import TripletMarginMiner

from course_utils import triplets


def test_kinds_match_pml_miner():
    gen = torch.Generator().manual_seed(0)
    embeddings, labels = torch.randn(24, 3, generator=gen), torch.arange(24) % 3
    margin = 0.3
    anchors, positives, negatives, d_ap, d_an = triplets.all_triplets(embeddings, labels, LpDistance())
    kinds = triplets.triplet_type(d_ap, d_an, margin)
    for k, pml_name in enumerate(("easy", "semihard", "hard")):
        mined = TripletMarginMiner(margin=margin, type_of_triplets=pml_name)(embeddings, labels)
        ours = {t for t, kind in zip(zip(anchors.tolist(), positives.tolist(), negatives.tolist()), kinds) if kind == k}
        assert ours == set(zip(*(x.tolist() for x in mined))), pml_name


@pytest.mark.parametrize("d_an, expected", [(2.0, 0), (1.2, 1), (1.0, 2), (0.5, 2)])
def test_triplet_type_boundaries(d_an, expected):
    assert triplets.triplet_type(1.0, d_an, 0.5).item() == expected


def test_count_relations_matches_loop():
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    n = len(labels)
    pos = sum(labels[i] == labels[j] for i in range(n) for j in range(n) if i != j)
    neg = sum(labels[i] != labels[j] for i in range(n) for j in range(n))
    trip = sum(labels[a] == labels[p] != labels[q] for a in range(n) for p in range(n) for q in range(n) if a != p)
    assert triplets.count_relations(labels) == {"positive pairs": pos, "negative pairs": neg, "triplets": trip}


def test_active_pairs_matches_pml_loss_terms():
    """A pair is active exactly when PML's ContrastiveLoss gives it a non-zero loss."""
    from pytorch_metric_learning.losses import ContrastiveLoss
    from pytorch_metric_learning.reducers import DoNothingReducer

    gen = torch.Generator().manual_seed(3)
    embeddings, labels = torch.randn(20, 4, generator=gen), torch.arange(20) % 3
    fractions = triplets.active_pairs(embeddings, labels, pos_margin=0.3, neg_margin=0.9)
    terms = ContrastiveLoss(pos_margin=0.3, neg_margin=0.9, reducer=DoNothingReducer())(embeddings, labels)
    assert fractions["positive"] == pytest.approx((terms["pos_loss"]["losses"] > 0).float().mean().item())
    assert fractions["negative"] == pytest.approx((terms["neg_loss"]["losses"] > 0).float().mean().item())


def test_triplet_regions_counts_each_kind():
    negatives = torch.tensor([[3.0, 0.0], [0.0, 1.2], [0.5, 0.0], [-0.2, 0.1]])
    fig = triplets.triplet_regions([0.0, 0.0], [1.0, 0.0], negatives, margin=0.5)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[:3] == ["easy negatives (1)", "semihard negatives (1)", "hard negatives (2)"]
    assert len(fig.axes[0].patches) == 2
    plt.close(fig)
