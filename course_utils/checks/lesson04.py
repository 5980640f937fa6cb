"""Lesson 04's exercise check: ``circle_loss`` against PML's CircleLoss, values and gradients."""
from pytorch_metric_learning.losses import CircleLoss
from pytorch_metric_learning.reducers import MeanReducer

from .plumbing import compare_loss, loss_batches


def check_circle_loss(circle_loss) -> None:
    """Lesson 04: ``circle_loss(embeddings, labels, m=0.4, gamma=80)`` equals PML's CircleLoss (cosine
    similarity; one term per anchor, averaged over anchors that have a positive and a negative)."""
    hints = ["Circle loss works on cosine similarity s, not on a distance: normalise, then s = x @ x.T",
             "positive weights are relu(1 + m - s_p).detach(), negative weights relu(s_n + m).detach()",
             "the logits are -gamma * a_p * (s_p - (1 - m)) and gamma * a_n * (s_n - m)",
             "per anchor: softplus(logsumexp(positive logits) + logsumexp(negative logits))",
             "a sample is not its own positive: leave out the diagonal",
             "average over the anchors that have at least one positive and one negative"]
    settings = [{}, {"m": 0.4, "gamma": 80}, {"m": 0.25, "gamma": 32}, {"m": 0.1, "gamma": 8}]
    for (embeddings, labels), kwargs in zip(loss_batches(), settings):
        compare_loss("circle_loss", circle_loss, CircleLoss, embeddings, labels, kwargs, hints, {
            "the mean is taken over all anchors, also those without a positive or a negative":
                lambda **kw: CircleLoss(**kw, reducer=MeanReducer())},
            gradient_hint=" Compute the weights alpha_p and alpha_n from sim.detach(): the paper treats them as "
                          "constants, so no gradient may flow through them.")
    print("✓ circle_loss matches PML's CircleLoss (values and gradients).")
