"""Lesson 06's exercise checks: ``balanced_batches`` (batch structure, class probabilities against the exact
target, the seed) and ``predict_positive_pairs``."""
import math

import numpy as np
import torch

from .. import sampling
from .plumbing import call


def _batch_problem(labels_of_batch, batch, m, counts):
    """What is wrong with one batch's structure (a message), or None."""
    classes, per_class = labels_of_batch.unique(return_counts=True)
    for c, n in zip(classes.tolist(), per_class.tolist()):
        if n > m and n % m == 0:
            return (f"class {c} appears {n // m} times in one batch ({n} images): a class was drawn twice. Draw the "
                    f"batch's classes without replacement (torch.multinomial(..., replacement=False)).")
        if n != m:
            return (f"class {c} has {n} images in one batch; every class drawn must bring exactly m={m} images "
                    f"(if it has fewer than m, draw them with replacement).")
        images = batch[labels_of_batch == c]
        if counts[c] >= m and len(images.unique()) < m:
            return (f"an image of class {c} appears twice in one batch although the class has {counts[c]} >= m "
                    f"images: draw a class's m images without replacement (torch.randperm) when it has enough.")
    return None


def _check_structure(result, labels, m, batch_size, num_batches):
    assert torch.is_tensor(result) and not result.is_floating_point(), \
        f"balanced_batches should return an integer tensor of indices into labels, got {type(result).__name__}" + \
        (f" of {result.dtype}" if torch.is_tensor(result) else "")
    assert tuple(result.shape) == (num_batches, batch_size), \
        f"balanced_batches should return shape (num_batches, batch_size) = {(num_batches, batch_size)}, " \
        f"got {tuple(result.shape)}"
    assert result.min() >= 0 and result.max() < len(labels), "the values must be indices into labels (0 to N - 1)"
    counts = torch.bincount(labels)
    for batch in result:
        problem = _batch_problem(labels[batch], batch, m, counts)
        assert problem is None, problem
    k = batch_size // m
    assert all(len(labels[b].unique()) == k for b in result), f"every batch must hold batch_size // m = {k} classes"


def _toy_labels():
    """Six classes of 90, 45, 20, 9, 5 and 3 samples (the last has fewer than m=4), shuffled; labels 0 to 5."""
    gen = torch.Generator().manual_seed(6)
    labels = torch.repeat_interleave(torch.arange(6), torch.tensor([90, 45, 20, 9, 5, 3]))
    return labels[torch.randperm(len(labels), generator=gen)]


def check_balanced_batches(balanced_batches) -> None:
    """Lesson 06: ``balanced_batches(labels, m, batch_size, num_batches, t, seed)`` draws batches of
    ``batch_size // m`` classes × m images, classes with probability ∝ count ** t, reproducibly per seed."""
    labels, m, batch_size, num_batches = _toy_labels(), 4, 12, 3000
    counts, k = torch.bincount(labels), batch_size // m
    for t in (0.0, 0.5, 1.0):
        result = _with_global_seed(123 + int(10 * t), balanced_batches, labels, m, batch_size, num_batches, t,
                                   seed=int(10 * t))
        _check_structure(result, labels, m, batch_size, num_batches)
        drawn = torch.stack([torch.isin(torch.arange(len(counts)), labels[b]) for b in result]).double().mean(0)
        target = sampling.inclusion_probabilities(counts, k, t)
        tolerance = 4.5 * (target * (1 - target) / num_batches).sqrt() + 0.01
        if ((drawn - target).abs() > tolerance).any():
            message = (f"with t={t}, the fraction of batches holding each class is "
                       f"{[round(v, 3) for v in drawn.tolist()]} "
                       f"(class sizes {counts.tolist()}); expected {[round(v, 3) for v in target.tolist()]}.")
            for wrong_t, mistake in ((1.0, "the class probability is ∝ count, not count ** t"),
                                     (0.0, "the classes are drawn uniformly: t is ignored")):
                wrong = sampling.inclusion_probabilities(counts, k, wrong_t)
                if wrong_t != t and ((drawn - wrong).abs() <= tolerance).all():
                    raise AssertionError(message + f" That is what you get if {mistake}.")
            raise AssertionError(message + " Draw the classes with probability ∝ count ** t "
                                           "(weights = counts ** t; torch.multinomial(weights, k, replacement=False)).")
    _check_seed(balanced_batches, labels, m, batch_size)
    print("✓ balanced_batches draws m images of batch_size // m different classes, classes ∝ count ** t, "
          "reproducibly per seed.")


def _with_global_seed(global_seed, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with PyTorch's and NumPy's global generators seeded with ``global_seed``, then put back:
    an answer that ignores its ``seed`` argument gives different results for different global seeds."""
    saved = np.random.get_state()
    try:
        with torch.random.fork_rng():
            torch.manual_seed(global_seed)
            np.random.seed(global_seed)
            return call(fn, *args, forbid=[(sampling, "class_balanced_batches")], **kwargs)
    finally:
        np.random.set_state(saved)


def _check_seed(balanced_batches, labels, m, batch_size):
    runs = [_with_global_seed(global_seed, balanced_batches, labels, m, batch_size, 20, 0.5, seed=seed)
            for seed, global_seed in ((5, 1), (5, 2), (6, 1))]
    assert torch.equal(runs[0], runs[1]), (
        "two calls with the same seed gave different batches: the seed is ignored. Draw everything from "
        "gen = torch.Generator().manual_seed(seed), passing generator=gen to torch.multinomial and torch.randperm.")
    assert not torch.equal(runs[0], runs[2]), \
        "seeds 5 and 6 gave the same batches: the generator must be seeded with the seed argument."


def check_positive_pairs(predict_positive_pairs) -> None:
    """Lesson 06: ``predict_positive_pairs(m, batch_size)`` is the number of positive pairs of an m-per-class batch."""
    for m, batch_size in ((8, 64), (4, 64), (2, 64), (8, 32), (16, 32), (32, 32)):  # m=8 first: no two mistakes agree
        result = call(predict_positive_pairs, m, batch_size)
        if torch.is_tensor(result) and result.numel() == 1:
            result = result.item()
        assert isinstance(result, (int, float)) and not isinstance(result, bool), \
            f"predict_positive_pairs should return one number, got {type(result).__name__}."
        expected, k = sampling.m_per_class_positive_pairs(batch_size, m), batch_size // m
        if math.isclose(result, expected):
            continue
        mistakes = {2 * expected: "ordered pairs (i, j) and (j, i) are counted twice: a pair is unordered",
                    k * m * (m + 1) / 2: "each image is counted as a pair with itself",
                    k * m * m / 2: "each image is counted as a pair with itself",
                    m * (m - 1) / 2: f"only one class is counted: the batch holds {k} classes",
                    batch_size * (batch_size - 1) / 2: "every pair of the batch is counted, negatives too"}
        hint = next((v for key, v in mistakes.items() if math.isclose(result, key)),
                    "each of the batch_size // m classes brings C(m, 2) = m (m - 1) / 2 pairs")
        raise AssertionError(f"m={m}, batch_size={batch_size}: expected {expected} positive pairs, got {result}: "
                             f"{hint}.")
    print("✓ predict_positive_pairs counts the positive pairs of an m-per-class batch.")
