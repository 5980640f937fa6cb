"""Lesson 02's exercise check: ``contrastive_loss`` against PML's ContrastiveLoss, values and gradients."""
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.losses import ContrastiveLoss
from pytorch_metric_learning.reducers import MeanReducer

from .plumbing import compare_loss, loss_batches


def check_contrastive_loss(contrastive_loss) -> None:
    """Lesson 02: ``contrastive_loss(embeddings, labels, pos_margin=0.0, neg_margin=1.0)`` equals PML's
    ContrastiveLoss (Euclidean distance of L2-normalised embeddings, average over the non-zero terms)."""
    hints = ["the loss of a negative pair is max(0, neg_margin - d), of a positive pair max(0, d - pos_margin)",
             "normalise the embeddings (dim=1) before taking distances",
             "average the positive and the negative terms separately, each over its non-zero terms only, "
             "and add the two averages",
             "a sample is not its own positive: leave out the diagonal"]
    settings = [{}, {"pos_margin": 0.0, "neg_margin": 1.0}, {"pos_margin": 0.25, "neg_margin": 0.9},
                {"pos_margin": 0.1, "neg_margin": 1.6}]
    for (embeddings, labels), kwargs in zip(loss_batches(), settings):
        compare_loss("contrastive_loss", contrastive_loss, ContrastiveLoss, embeddings, labels, kwargs, hints, {
            "the embeddings are not L2-normalised": lambda **kw: ContrastiveLoss(
                **kw, distance=LpDistance(normalize_embeddings=False)),
            "each kind of term is averaged over all pairs instead of the non-zero ones":
                lambda **kw: ContrastiveLoss(**kw, reducer=MeanReducer())})
    print("✓ contrastive_loss matches PML's ContrastiveLoss (values and gradients).")
