"""Hard-example mining: what a batch's pairs and triplets still teach, counted per training batch; PML's miners
(``MultiSimilarityMiner``, ``TripletMarginMiner``, ``BatchHardMiner``); the Multi-Similarity rule drawn
(lesson 05)."""
import math

import torch
import torch.nn.functional as F
from pytorch_metric_learning.distances import LpDistance

from . import evaluation, lesson, models, plotting, session, triplets

# ---------------------------------------------------------------- measured on every training batch


def batch_log(measures: dict):
    """An ``on_batch`` for ``lesson.train_embedder`` and the log it fills, one value per batch: ``{name: [...]}``
    for ``measures`` = ``{name: fn(embeddings (B, D), labels (B,))}`` returning a number, or a dict of numbers
    (logged as ``f"{name} {key}"``)."""
    log = {}

    def on_batch(embeddings, labels):
        for name, measure in measures.items():
            value = measure(embeddings, labels)
            for key, v in (value.items() if isinstance(value, dict) else [(None, value)]):
                log.setdefault(name if key is None else f"{name} {key}", []).append(float(v))
    return on_batch, log


def mined_count(miner):
    """A measure: how many tuples ``miner`` returns for a batch (pairs of both kinds, or triplets)."""
    def count(embeddings, labels):
        tuples = miner(embeddings, labels)
        return len(tuples[0]) if len(tuples) == 3 else len(tuples[0]) + len(tuples[2])
    return count


def mined_pairs(miner):
    """A measure: ``{"positive": ..., "negative": ...}``, the pairs of each kind a pair miner returns for a batch."""
    def count(embeddings, labels):
        a1, _, a2, _ = miner(embeddings, labels)
        return {"positive": len(a1), "negative": len(a2)}
    return count


def batch_pairs(embeddings, labels):
    """A measure: ``{"positive": ..., "negative": ...}``, the ordered pairs of each kind the batch holds."""
    same = labels[:, None] == labels[None, :]
    return {"positive": int(same.sum()) - len(labels), "negative": int((~same).sum())}


def triplet_census(margin: float = 0.05, distance=None):
    """A measure: how many of the batch's triplets are ``"easy"``, ``"semihard"``, ``"hard"`` (lesson 03's kinds,
    PML's ``TripletMarginMiner`` definitions) and ``"all"`` (semihard and hard: non-zero loss), the
    ``"zero-loss fraction"`` (the easy share) and the ``"mean margin"``, the mean of d(a,n) - d(a,p)."""
    def census(embeddings, labels):
        *_, d_ap, d_an = triplets.all_triplets(embeddings, labels, distance or LpDistance())
        kinds = triplets.triplet_type(d_ap, d_an, margin)
        counts = {name: int((kinds == k).sum()) for k, name in enumerate(triplets.TRIPLET_TYPES)}
        return {**counts, "all": counts["semihard"] + counts["hard"],
                "zero-loss fraction": counts["easy"] / max(len(kinds), 1), "mean margin": (d_an - d_ap).mean()}
    return census


def gradient_norm(loss_fn, miner=None):
    """A measure: the norm of the gradient of ``loss_fn`` (with ``miner``'s tuples if given) with respect to
    the batch's embeddings (B, D): how hard the loss pushes on this batch."""
    def norm(embeddings, labels):
        x = embeddings.detach().clone().requires_grad_(True)
        loss = loss_fn(x, labels) if miner is None else loss_fn(x, labels, miner(x, labels))
        (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
        return 0.0 if grad is None else grad.norm()
    return norm


def triplet_margin(miner, distance=None):
    """A measure: the mean of d(a,n) - d(a,p) over the triplets ``miner`` returns for the batch: negative when
    their negatives are closer to the anchors than their positives."""
    def margin(embeddings, labels):
        a, p, n = miner(embeddings, labels)
        dist = (distance or LpDistance())(embeddings)
        return (dist[a, n] - dist[a, p]).mean() if len(a) else float("nan")
    return margin


def means(log: dict, first: int = 10) -> dict:
    """``{name: (mean over the first ``first`` batches, mean over the last ``first``)}`` of a ``batch_log``."""
    avg = lambda values: sum(values) / len(values)
    return {name: (avg(values[:first]), avg(values[-first:])) for name, values in log.items()}


class UnitEmbeddingNet(models.EmbeddingNet):
    """``models.EmbeddingNet`` whose embeddings (N, D) are L2-normalised: the geometry of losses that normalise."""

    def forward(self, x):
        return F.normalize(super().forward(x), dim=1)


def unit_embedder(budget) -> UnitEmbeddingNet:
    """``lesson.new_embedder`` with L2-normalised outputs (the same weights for the same seed, the same state keys)."""
    return UnitEmbeddingNet(models.ConvTrunk(), budget.embedding_dim)


def initial_state(budget, seed: int) -> dict:
    """The weights ``lesson.compare`` starts seed ``seed`` from: a new embedder right after seeding everything."""
    session.seed_everything(seed)
    return lesson.new_embedder(budget).state_dict()


def logged_training(loss_fn, measures: dict, sets, budget, config, miner=None, seed: int = 0):
    """Train seed ``seed`` from the weights and batches ``lesson.compare`` uses, taking ``measures`` on every
    training batch before its step; returns ``(model, log)`` with the ``batch_log``."""
    on_batch, log = batch_log(measures)
    model, _ = lesson.train_embedder(loss_fn, sets.train, budget, config, miner=miner, seed=seed, progress=False,
                                     init_state=initial_state(budget, seed), on_batch=on_batch)
    return model, log


# ---------------------------------------------------------------- figures


def per_batch(log: dict, names, ax=None, title=None, ylabel=None, labels=None, logy: bool = False):
    """One line per ``batch_log`` entry in ``names`` against the training batch (legend ``labels``, default
    the names)."""
    fig, ax = plotting.figure_and_axes(ax, (6, 3.5))
    for name, label in zip(names, labels or names):
        ax.plot(range(1, len(log[name]) + 1), log[name], label=label)
    ax.set(xlabel="training batch", ylabel=ylabel, title=title)
    if logy:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    return fig


def _anchor_pairs(embeddings, labels, anchor: int, miner):
    """Cosine similarities of ``anchor`` to its positives and negatives, and which of them ``miner`` keeps."""
    sim = F.normalize(embeddings, dim=1) @ F.normalize(embeddings, dim=1)[anchor]
    others = torch.arange(len(labels)) != anchor
    positives = ((labels == labels[anchor]) & others).nonzero().squeeze(1)
    negatives = (labels != labels[anchor]).nonzero().squeeze(1)
    a1, p, a2, n = miner(embeddings, labels)
    kept_p, kept_n = set(p[a1 == anchor].tolist()), set(n[a2 == anchor].tolist())
    return sim, {"positive": (positives, kept_p), "negative": (negatives, kept_n)}


def ms_rule(ax, embeddings, labels, anchor: int, miner):
    """One anchor's positives and negatives on the axis of cosine similarity, filled where ``miner`` (a
    ``MultiSimilarityMiner``) keeps the pair, with the rule's two thresholds."""
    sim, pairs = _anchor_pairs(embeddings, labels, anchor, miner)
    hardest_pos, hardest_neg = sim[pairs["positive"][0]].min(), sim[pairs["negative"][0]].max()
    for row, (kind, color) in enumerate((("negative", "tab:red"), ("positive", "tab:green"))):
        idx, kept = pairs[kind]
        keep = torch.tensor([int(i) in kept for i in idx], dtype=torch.bool)
        ax.scatter(sim[idx][keep], [row] * int(keep.sum()), s=90, color=color, label=f"{kind} pairs kept")
        ax.scatter(sim[idx][~keep], [row] * int((~keep).sum()), s=90, facecolors="none", edgecolors=color,
                   label=f"{kind} pairs dropped")
    eps = miner.epsilon
    ax.plot([hardest_pos - eps] * 2, [-0.3, 0.3], color="tab:red", linestyle="--",
            label=f"hardest positive − ε = {hardest_pos - eps:.2f}")
    ax.plot([hardest_neg + eps] * 2, [0.7, 1.3], color="tab:green", linestyle="--",
            label=f"hardest negative + ε = {hardest_neg + eps:.2f}")
    ax.set(xlim=(-1.1, max(1.25, float(hardest_neg + eps) + 0.1)), ylim=(-0.6, 1.6), yticks=[0, 1],
           yticklabels=["negatives", "positives"],
           xlabel=f"cosine similarity to the anchor (sample {anchor})", title=f"MultiSimilarityMiner(epsilon={eps})")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return ax


def pairs_on_circle(ax, embeddings, labels, anchor: int, miner, class_names=None):
    """2-D embeddings on the unit circle, coloured by class, with a line from ``anchor`` to each pair the
    miner keeps (solid) or drops (dotted)."""
    unit = F.normalize(embeddings, dim=1)
    _, pairs = _anchor_pairs(embeddings, labels, anchor, miner)
    t = torch.linspace(0, 2 * math.pi, 200)
    ax.plot(t.cos(), t.sin(), color="lightgrey", zorder=0)
    for idx, kept in pairs.values():
        for i in idx.tolist():
            ax.plot(*unit[[anchor, i]].T, color="black", linestyle="-" if i in kept else ":",
                    linewidth=1.2 if i in kept else 0.8, zorder=1)
    for c in labels.unique().tolist():
        pts = unit[labels == c]
        ax.scatter(pts[:, 0], pts[:, 1], s=60, color=plotting.class_color(c), zorder=2,
                   label=class_names[c] if class_names else f"class {c}")
    ax.scatter(*unit[anchor].tolist(), marker="*", s=350, color="black", zorder=3, label="anchor")
    ax.set(aspect="equal", xlabel="embedding dim 1", ylabel="embedding dim 2",
           title="Pairs of the anchor: kept (solid), dropped (dotted)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return ax


def mean_distance(net, dataset, device) -> float:
    """Mean distance between the L2-normalised embeddings of two different images of ``dataset``: how spread out
    the embedding is (0: every image on one point, a collapsed embedding)."""
    embeddings, _ = evaluation.embed(net, dataset, device)
    unit = F.normalize(embeddings, dim=1)
    return (torch.cdist(unit, unit).sum() / (len(unit) * (len(unit) - 1))).item()


def changed_tensors(before: dict, after: dict) -> list:
    """The names of the tensors of a state dict that differ between ``before`` and ``after``."""
    return [name for name in before if not torch.equal(before[name].cpu(), after[name].cpu())]
