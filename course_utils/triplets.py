"""Pairs and triplets of a batch: which ones still have loss (lesson 02), and the kinds of triplets (anchor,
positive, negative): easy, semihard, hard, and their picture (lesson 03)."""
import matplotlib.pyplot as plt
import torch
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

from . import plotting

TRIPLET_TYPES = ("easy", "semihard", "hard")  # PML's spelling, as TripletMarginMiner's type_of_triplets


def triplet_type(d_ap, d_an, margin: float):
    """0 easy (d_an > d_ap + margin), 1 semihard (d_ap < d_an <= d_ap + margin), 2 hard (d_an <= d_ap)."""
    gap = torch.as_tensor(d_an) - torch.as_tensor(d_ap)
    return torch.where(gap > margin, 0, torch.where(gap > 0, 1, 2))


def all_triplets(embeddings, labels, distance):
    """Every valid triplet of a batch with its distances: (anchors, positives, negatives, d_ap, d_an)."""
    anchors, positives, negatives = lmu.get_all_triplets_indices(labels)
    dist = distance(embeddings)
    return anchors, positives, negatives, dist[anchors, positives], dist[anchors, negatives]


def count_relations(labels) -> dict:
    """How many positive pairs, negative pairs and triplets a batch with these labels offers (ordered)."""
    a1, _, a2, _ = lmu.get_all_pairs_indices(labels)
    anchors, _, _ = lmu.get_all_triplets_indices(labels)
    return {"positive pairs": len(a1), "negative pairs": len(a2), "triplets": len(anchors)}


def active_pairs(embeddings, labels, pos_margin: float = 0.0, neg_margin: float = 1.0, distance=None) -> dict:
    """Fractions of a batch's positive and negative pairs that contrastive loss still penalises (lesson 02):
    positives farther apart than ``pos_margin``, negatives closer than ``neg_margin`` (PML's default distance)."""
    from pytorch_metric_learning.distances import LpDistance

    a1, p, a2, n = lmu.get_all_pairs_indices(labels)
    dist = (distance or LpDistance())(embeddings)
    return {"positive": (dist[a1, p] > pos_margin).float().mean().item(),
            "negative": (dist[a2, n] < neg_margin).float().mean().item()}


def triplet_regions(anchor, positive, negatives, margin: float, ax=None, title=None):
    """A 2-D anchor, its positive and negatives (N, 2), coloured by triplet kind, with the two circles that
    separate hard, semihard and easy negatives."""
    fig, ax = plotting.figure_and_axes(ax, (8, 5.5))
    anchor, positive, negatives = map(torch.as_tensor, (anchor, positive, negatives))
    d_ap = (positive - anchor).norm()
    kinds = triplet_type(d_ap, (negatives - anchor).norm(dim=1), margin)
    for radius, style in ((d_ap, "-"), (d_ap + margin, "--")):
        ax.add_patch(plt.Circle(anchor.tolist(), float(radius), fill=False, linestyle=style, color="grey"))
    colors = ("tab:blue", "tab:orange", "tab:red")
    for k, (name, color) in enumerate(zip(TRIPLET_TYPES, colors)):
        pts = negatives[kinds == k]
        ax.scatter(pts[:, 0], pts[:, 1], color=color, label=f"{name} negatives ({len(pts)})", s=25)
    ax.scatter(*anchor.tolist(), marker="*", s=250, color="black", label="anchor", zorder=3)
    ax.scatter(*positive.tolist(), marker="P", s=150, color="tab:green", label="positive", zorder=3)
    ax.set(aspect="equal", xlabel="embedding dim 1", ylabel="embedding dim 2",
           title=title or f"Triplet kinds for one anchor (margin {margin})")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.tight_layout()
    return fig
