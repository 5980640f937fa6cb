"""Lesson 06's exercise checks: right answers pass, typical mistakes are named."""
import numpy as np
import pytest
import torch
from reference_copies import copy_of

from course_utils import sampling
from course_utils.checks import lesson06

# ---------------------------------------------------------------- exercise 1: check_balanced_batches


def make_batches(labels, m, batch_size, num_batches, t, seed, power=None, class_replacement=False, per_class=None,
                 image_replacement=False, use_seed=True, seed_offset=0):
    """A right answer, or one with exactly one typical mistake."""
    gen = torch.Generator().manual_seed(seed + seed_offset) if use_seed else None
    per_class = per_class or m
    classes, counts = labels.unique(return_counts=True)
    weights = counts.double() ** (t if power is None else power)
    batches = []
    for _ in range(num_batches):
        picks = []
        k = batch_size // per_class
        for c in torch.multinomial(weights, k, replacement=class_replacement, generator=gen):
            members = (labels == classes[c]).nonzero().flatten()
            if len(members) >= per_class and not image_replacement:
                picks.append(members[torch.randperm(len(members), generator=gen)[:per_class]])
            else:
                picks.append(members[torch.randint(len(members), (per_class,), generator=gen)])
        batches.append(torch.cat(picks))
    return torch.stack(batches)


def numpy_answer(labels, m, batch_size, num_batches, t, seed):
    """Also right: NumPy's choice without replacement draws classes the same way as torch.multinomial."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels.numpy(), return_counts=True)
    p = counts ** t / (counts ** t).sum()
    out = []
    for _ in range(num_batches):
        batch = []
        for c in rng.choice(len(classes), batch_size // m, replace=False, p=p):
            members = np.flatnonzero(labels.numpy() == classes[c])
            batch += list(rng.choice(members, m, replace=len(members) < m))
        out.append(batch)
    return torch.tensor(out)


@pytest.mark.parametrize("answer", [make_batches, numpy_answer, copy_of(sampling.class_balanced_batches)])
def test_balanced_check_accepts_right_answers(answer, capsys):
    lesson06.check_balanced_batches(answer)
    assert "✓" in capsys.readouterr().out


def not_implemented(*args, **kwargs):
    raise NotImplementedError()


@pytest.mark.parametrize("mistake, message", [
    (dict(power=1.0), "∝ count, not count \\*\\* t"),
    (dict(power=0.0), "t is ignored"),
    (dict(class_replacement=True), "a class was drawn twice"),
    (dict(per_class=3), "exactly m=4 images"),
    (dict(per_class=2), "exactly m=4 images"),
    (dict(image_replacement=True), "without replacement \\(torch.randperm\\)"),
    (dict(use_seed=False), "the seed is ignored"),
], ids=["probability ∝ count", "uniform", "classes with replacement", "3 images per class", "2 images per class",
        "images with replacement", "seed ignored"])
def test_balanced_check_names_the_mistake(mistake, message):
    with pytest.raises(AssertionError, match=message):
        lesson06.check_balanced_batches(lambda *args, **kwargs: make_batches(*args, **kwargs, **mistake))


def test_balanced_check_leaves_the_global_generators_alone():
    torch.manual_seed(0)
    np.random.seed(0)
    lesson06.check_balanced_batches(copy_of(sampling.class_balanced_batches))
    after = torch.rand(1), np.random.rand()
    torch.manual_seed(0)
    np.random.seed(0)
    assert (torch.rand(1), np.random.rand()) == after


def test_balanced_check_rejects_a_fixed_seed_and_wrong_outputs():
    fixed = lambda labels, m, b, n, t, seed: make_batches(labels, m, b, n, t, 0)
    with pytest.raises(AssertionError, match="seeds 5 and 6 gave the same batches"):
        lesson06.check_balanced_batches(fixed)
    with pytest.raises(AssertionError, match="not implemented"):
        lesson06.check_balanced_batches(not_implemented)
    with pytest.raises(AssertionError, match="shape"):
        lesson06.check_balanced_batches(lambda *a, **kw: make_batches(*a, **kw).flatten())
    with pytest.raises(AssertionError, match="integer tensor"):
        lesson06.check_balanced_batches(lambda *a, **kw: make_batches(*a, **kw).tolist())


# ---------------------------------------------------------------- exercise 2: check_positive_pairs


def test_positive_pairs_check_accepts(capsys):
    lesson06.check_positive_pairs(lambda m, batch_size: batch_size // m * m * (m - 1) // 2)
    lesson06.check_positive_pairs(lambda m, batch_size: torch.tensor(batch_size * (m - 1) / 2))
    assert capsys.readouterr().out.count("✓") == 2


@pytest.mark.parametrize("wrong, message", [
    (lambda m, b: b // m * m * (m - 1), "counted twice"),
    (lambda m, b: b // m * m * (m + 1) // 2, "pair with itself"),
    (lambda m, b: b // m * m * m / 2, "pair with itself"),
    (lambda m, b: m * (m - 1) // 2, "only one class is counted"),
    (lambda m, b: b * (b - 1) // 2, "negatives too"),
    (lambda m, b: b * m, "C\\(m, 2\\)"),
    (lambda m, b: None, "one number"),
    (lambda m, b: not_implemented(), "not implemented"),
])
def test_positive_pairs_check_names_the_mistake(wrong, message):
    with pytest.raises(AssertionError, match=message):
        lesson06.check_positive_pairs(wrong)
