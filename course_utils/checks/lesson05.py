"""Lesson 05's exercise checks: ``ms_mine`` keeps the pairs of PML's ``MultiSimilarityMiner`` (and names the
typical mistake when it does not), and the epsilon experiment's result."""
import torch
import torch.nn.functional as F
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.miners import MultiSimilarityMiner

from .experiments import check_results_table
from .plumbing import call

FORBID = [(MultiSimilarityMiner, "mine")]  # the class ms_mine re-implements


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
    as_set = lambda mask: set(map(tuple, mask.nonzero().tolist()))
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
            result = call(ms_mine, embeddings.clone(), labels.clone(), forbid=FORBID)
            epsilon, called_with = 0.1, "default epsilon"
        else:
            result = call(ms_mine, embeddings.clone(), labels.clone(), epsilon=epsilon, forbid=FORBID)
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
