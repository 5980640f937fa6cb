"""Lesson 03's exercise check: ``triplet_loss`` against PML's TripletMarginLoss, values and gradients."""
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.losses import TripletMarginLoss
from pytorch_metric_learning.reducers import MeanReducer

from .plumbing import compare_loss, loss_batches


def check_triplet_loss(triplet_loss) -> None:
    """Lesson 03: ``triplet_loss(embeddings, labels, margin=0.05)`` equals PML's TripletMarginLoss over all
    triplets of the batch (Euclidean distance of L2-normalised embeddings, average over non-zero terms)."""
    hints = ["the loss of a triplet is max(0, d(a, p) - d(a, n) + margin)",
             "PML 2.x's default margin is 0.05",
             "normalise the embeddings (dim=1) before taking distances",
             "average over the triplets whose loss is non-zero, not over all triplets",
             "a positive must differ from its anchor: (a, a, n) is not a triplet"]
    settings = [{}, {"margin": 0.05}, {"margin": 0.2}, {"margin": 1.0}]
    for (embeddings, labels), kwargs in zip(loss_batches(), settings):
        compare_loss("triplet_loss", triplet_loss, TripletMarginLoss, embeddings, labels, kwargs, hints, {
            "the embeddings are not L2-normalised": lambda **kw: TripletMarginLoss(
                **kw, distance=LpDistance(normalize_embeddings=False)),
            "the loss is averaged over all triplets instead of the non-zero ones":
                lambda **kw: TripletMarginLoss(**kw, reducer=MeanReducer()),
            "the default margin is 0.2 instead of PML's 0.05": lambda **kw: TripletMarginLoss(**{"margin": 0.2, **kw})})
    print("✓ triplet_loss matches PML's TripletMarginLoss (values and gradients).")
