"""Hard-example mining: what a batch's pairs and triplets still teach, counted per training batch; PML's miners
(``MultiSimilarityMiner``, ``TripletMarginMiner``, ``BatchHardMiner``); the Multi-Similarity rule drawn and
checked (lesson 05)."""
import math

import torch
import torch.nn.functional as F
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.miners import MultiSimilarityMiner

from . import evaluation, lesson, models, plotting, session, triplets
from .exercises import _call, check_results_table

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
    avg = lambda values: sum(values) / len(values)  # noqa: E731
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
    fig, ax = plotting._axes(ax, (6, 3.5))
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


# ---------------------------------------------------------------- exercise: the Multi-Similarity miner's pairs


def _rule(mat, labels, epsilon, reverse=False, include_self=False, per_anchor=True, sign=1, easiest=False):
    """The Multi-Similarity rule on a similarity matrix ``mat`` (N, N), with switches that make the typical
    mistakes; returns the kept pairs as two sets, ``({(a, p)}, {(a, n)})``."""
    same = labels[:, None] == labels[None, :]
    pos = same if include_self else same & ~torch.eye(len(labels), dtype=torch.bool)
    neg = ~same
    inf = float("inf")
    if easiest:  # the most similar positive and the least similar negative
        hard_p = mat.masked_fill(~pos, -inf).amax(1, keepdim=True)
        hard_n = mat.masked_fill(~neg, inf).amin(1, keepdim=True)
    else:
        hard_p = mat.masked_fill(~pos, inf).amin(1, keepdim=True)
        hard_n = mat.masked_fill(~neg, -inf).amax(1, keepdim=True)
    if not per_anchor:
        hard_p, hard_n = mat[pos].min().expand_as(hard_p), mat[neg].max().expand_as(hard_n)
    if reverse:
        keep_n, keep_p = mat < hard_p - sign * epsilon, mat > hard_n + sign * epsilon
    else:
        keep_n, keep_p = mat > hard_p - sign * epsilon, mat < hard_n + sign * epsilon
    as_set = lambda mask: set(map(tuple, mask.nonzero().tolist()))  # noqa: E731
    return as_set(keep_p & pos), as_set(keep_n & neg)


def _pml_sets(embeddings, labels, epsilon, distance=None):
    kwargs = {"distance": distance} if distance is not None else {}
    a1, p, a2, n = MultiSimilarityMiner(epsilon=epsilon, **kwargs)(embeddings, labels)
    return set(zip(a1.tolist(), p.tolist())), set(zip(a2.tolist(), n.tolist()))


_DISTANCE = ("you used Euclidean distance instead of cosine similarity: the rule is written for a similarity "
             "(larger = more alike), s = F.normalize(x, dim=1) @ F.normalize(x, dim=1).T")


def _mistakes(embeddings, labels, epsilon):
    """``[(description, (positive pairs, negative pairs))]``: what each typical mistake keeps on this batch."""
    unit = F.normalize(embeddings, dim=1)
    sim = unit @ unit.T
    return [
        ("the inequalities are reversed: keep a negative pair when its similarity is ABOVE the anchor's hardest "
         "positive similarity minus epsilon, and a positive pair when its similarity is BELOW the anchor's "
         "hardest negative similarity plus epsilon", _rule(sim, labels, epsilon, reverse=True)),
        ("the inequalities are reversed: keep a negative pair when its similarity is ABOVE the anchor's hardest "
         "positive similarity minus epsilon, and a positive pair when its similarity is BELOW the anchor's "
         "hardest negative similarity plus epsilon", _rule(sim, labels, epsilon, reverse=True, sign=-1)),
        (_DISTANCE, _pml_sets(embeddings, labels, epsilon, LpDistance())),
        (_DISTANCE, _pml_sets(embeddings, labels, epsilon, LpDistance(normalize_embeddings=False))),
        (_DISTANCE, _rule(torch.cdist(unit, unit), labels, epsilon)),
        (_DISTANCE, _rule(torch.cdist(embeddings, embeddings), labels, epsilon)),
        ("the embeddings are not L2-normalised: cosine similarity is the dot product of normalised rows",
         _rule(embeddings @ embeddings.T, labels, epsilon)),
        ("a sample is paired with itself: it is not its own positive, so leave the diagonal out of the positive "
         "pairs and of the hardest positive (an anchor with no other sample of its class keeps no pair at all)",
         _rule(sim, labels, epsilon, include_self=True)),
        ("the batch's global hardest positive and negative are used instead of each anchor's own: take the "
         "minimum and maximum along dim=1, one per anchor (row)", _rule(sim, labels, epsilon, per_anchor=False)),
        ("epsilon has the wrong sign: negatives are kept above the hardest positive similarity MINUS epsilon, "
         "positives below the hardest negative similarity PLUS epsilon", _rule(sim, labels, epsilon, sign=-1)),
        ("the hardest positive is the LEAST similar positive of the anchor (a minimum) and the hardest negative "
         "the MOST similar negative (a maximum), not the other way round", _rule(sim, labels, epsilon, easiest=True)),
    ]


def _mining_batches():
    """Four batches of 18 embeddings in float64: 4 classes with varied lengths and one sample alone in its
    class, almost a copy of a sample of another class; with the epsilon to call with (None: the default)."""
    for seed, epsilon in zip(range(4), (None, 0.1, 0.3, 0.05)):
        gen = torch.Generator().manual_seed(500 + seed)
        labels = (torch.arange(18) % 4)[torch.randperm(18, generator=gen)]
        labels[-1] = 4
        centres = torch.randn(4, 6, generator=gen, dtype=torch.float64)
        x = centres[labels.clamp(max=3)] + 0.9 * torch.randn(18, 6, generator=gen, dtype=torch.float64)
        x[-1] = x[0] + 0.05 * torch.randn(6, generator=gen, dtype=torch.float64)
        yield x * (0.3 + 3 * torch.rand(18, 1, generator=gen, dtype=torch.float64)), labels, epsilon


def _as_pairs(result, labels):
    """The student's ``(a1, p, a2, n)`` as two sets of pairs, with clear errors for the wrong format."""
    assert isinstance(result, (tuple, list)) and len(result) == 4, (
        "ms_mine should return four index tensors (a1, p, a2, n): positive pairs (a1[i], p[i]) and negative pairs "
        f"(a2[i], n[i]), as PML's pair miners do; got {type(result).__name__}"
        + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else "") + ".")
    for name, t in zip(("a1", "p", "a2", "n"), result):
        assert torch.is_tensor(t) and t.dim() == 1 and not t.is_floating_point() and t.dtype != torch.bool, \
            f"{name} should be a 1-D tensor of indices (integers, e.g. from .nonzero() or torch.where), got " + (
                f"a {t.dtype} tensor of shape {tuple(t.shape)}" if torch.is_tensor(t) else type(t).__name__) + "."
    a1, p, a2, n = (t.cpu() for t in result)
    assert len(a1) == len(p) and len(a2) == len(n), \
        f"a1 and p (and a2 and n) must have the same length: got {len(a1)}, {len(p)}, {len(a2)}, {len(n)}."
    pos, neg = list(zip(a1.tolist(), p.tolist())), list(zip(a2.tolist(), n.tolist()))
    assert len(set(pos)) == len(pos) and len(set(neg)) == len(neg), "a pair is returned twice: return each once."
    selves = [a for a, b in pos + neg if a == b]
    assert not selves, (f"sample {selves[0]} is paired with itself: a sample is not its own positive, so leave the "
                        "diagonal out of the positive pairs and of the hardest positive.")
    return set(pos), set(neg)


def _explain(pair, kind, expected: set, sim, labels, epsilon) -> str:
    """Why one pair should (not) be kept, in numbers."""
    a, b = pair
    others = torch.arange(len(labels)) != a
    hard_p = sim[a][(labels == labels[a]) & others].min().item()
    hard_n = sim[a][labels != labels[a]].max().item()
    should = "be kept" if pair in expected else "not be kept"
    if kind == "negative":
        return (f"the negative pair ({a}, {b}) has similarity {sim[a, b]:.3f} and should {should}: anchor {a}'s "
                f"hardest positive similarity minus epsilon is {hard_p:.3f} - {epsilon} = {hard_p - epsilon:.3f}")
    return (f"the positive pair ({a}, {b}) has similarity {sim[a, b]:.3f} and should {should}: anchor {a}'s "
            f"hardest negative similarity plus epsilon is {hard_n:.3f} + {epsilon} = {hard_n + epsilon:.3f}")


def _diagnosis(got, expected, mistakes, side) -> str:
    """The mistake that explains the pairs of ``side`` (0 positive, 1 negative): one that explains both kinds at
    once, else one that explains this kind while the other kind is right or explained by a mistake of its own."""
    joint = [m for m, sets in mistakes if sets == got]
    if joint:
        return joint[0]
    here = [m for m, sets in mistakes if sets[side] == got[side]]
    other_ok = got[1 - side] == expected[1 - side] or any(sets[1 - side] == got[1 - side] for _, sets in mistakes)
    return here[0] if here and other_ok else None


def _compare_pairs(result, embeddings, labels, epsilon, called_with):
    got = _as_pairs(result, labels)
    expected = _pml_sets(embeddings, labels, epsilon)
    unit = F.normalize(embeddings, dim=1)
    sim = unit @ unit.T
    mistakes = _mistakes(embeddings, labels, epsilon)
    for side, kind in enumerate(("positive", "negative")):
        if got[side] == expected[side]:
            continue
        wrong_label = [pr for pr in got[side] if (labels[pr[0]] == labels[pr[1]]) != (kind == "positive")]
        assert not wrong_label, (f"({wrong_label[0][0]}, {wrong_label[0][1]}) is returned as a {kind} pair but its "
                                 f"labels {'differ' if kind == 'positive' else 'agree'}: the order is (a1, p, a2, n), "
                                 "positive pairs first.")
        message = (f"ms_mine({called_with}): your {kind} pairs differ from PML's MultiSimilarityMiner: "
                   f"{len(got[side])} instead of {len(expected[side])}. ")
        mistake = _diagnosis(got, expected, mistakes, side)
        if mistake:
            raise AssertionError(message + f"That is exactly what you get if {mistake}.")
        pair = min(got[side] ^ expected[side])
        raise AssertionError(message + "For example, " + _explain(pair, kind, expected[side], sim, labels, epsilon)
                             + ". Keep a negative pair when s > (anchor's lowest positive similarity) - epsilon, a "
                             "positive pair when s < (anchor's highest negative similarity) + epsilon.")


def check_ms_mine(ms_mine) -> None:
    """Lesson 05: ``ms_mine(embeddings (N, D), labels (N,), epsilon=0.1) -> (a1, p, a2, n)`` keeps the same
    positive and negative pairs as PML's ``MultiSimilarityMiner(epsilon)`` (compared as sets of pairs)."""
    for embeddings, labels, epsilon in _mining_batches():
        if epsilon is None:
            result, epsilon, called_with = _call(ms_mine, embeddings.clone(), labels.clone()), 0.1, "default epsilon"
        else:
            result = _call(ms_mine, embeddings.clone(), labels.clone(), epsilon=epsilon)
            called_with = f"epsilon={epsilon}"
        _compare_pairs(result, embeddings, labels, epsilon, called_with)
    print("✓ ms_mine keeps exactly the pairs of PML's MultiSimilarityMiner.")


def check_epsilon_experiment(result, epsilon: float, batch_size: int) -> None:
    """Lesson 05's experiment: ``(results table with the row f"epsilon={epsilon}", mean pairs mined per batch)``."""
    assert isinstance(result, (tuple, list)) and len(result) == 2, \
        f"Return two things, (results table, mean pairs mined per batch); got {type(result).__name__}."
    table, pairs = result
    check_results_table(table, [f"epsilon={epsilon}"])
    if torch.is_tensor(pairs) and pairs.numel() == 1:
        pairs = pairs.item()
    most = batch_size * (batch_size - 1)
    assert isinstance(pairs, (int, float)) and not isinstance(pairs, bool) and 0 <= pairs <= most, (
        f"The mean number of pairs mined per batch is one number between 0 and {most} (every ordered pair of a "
        f"batch of {batch_size}); got {pairs!r}.")
    print(f"✓ {pairs:,.0f} pairs mined per batch on average (of {most:,} ordered pairs per batch).")
