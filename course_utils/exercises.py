"""Automatic checks for the exercises. Each takes the student's function, compares it with a reference
on random inputs, and raises an AssertionError that says what is wrong, or prints a success line."""
import torch
import torch.nn.functional as F

from . import evaluation, session


def _random_batch(seed: int, n: int = 24, dim: int = 8, num_classes: int = 4):
    gen = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(n, dim, generator=gen) * 3
    labels = torch.arange(n) % num_classes  # every class appears several times
    return embeddings, labels[torch.randperm(n, generator=gen)]


def _call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise AssertionError(f"{fn.__name__} is not implemented yet: replace `raise NotImplementedError()` "
                             f"with your code.") from None


def _assert_tensor(name, result, shape):
    assert torch.is_tensor(result), f"{name} should return a torch tensor, got {type(result).__name__}."
    assert tuple(result.shape) == tuple(shape), \
        f"{name} should return shape {tuple(shape)}, got {tuple(result.shape)}."


def check_cosine_distance(cosine_distance) -> None:
    """Lesson 01: ``cosine_distance(x (N, D), y (M, D)) -> (N, M)`` equals 1 - cosine similarity."""
    for seed in range(3):
        x, _ = _random_batch(seed, n=7)
        y, _ = _random_batch(seed + 10, n=5)
        result = _call(cosine_distance, x, y)
        _assert_tensor("cosine_distance", result, (7, 5))
        expected = 1 - F.normalize(x, dim=1) @ F.normalize(y, dim=1).T
        if torch.allclose(result, 1 - expected, atol=1e-5):
            raise AssertionError("You returned the cosine *similarity*; the distance is 1 - similarity.")
        if torch.allclose(result, 1 - x @ y.T, atol=1e-4):
            raise AssertionError("The rows were not L2-normalised: divide each vector by its norm first.")
        assert torch.allclose(result, expected, atol=1e-5), (
            f"Wrong values: for x[0], y[0] expected {expected[0, 0]:.4f}, got {float(result[0, 0]):.4f}. "
            f"Normalise each row of x and y (dim=1) before the matrix product.")
    same = _call(cosine_distance, x, x).diagonal()
    assert torch.allclose(same, torch.zeros_like(same), atol=1e-5), \
        "A vector's cosine distance to itself should be 0."
    print("✓ cosine_distance is correct.")


def check_r_precision(r_precision) -> None:
    """Lesson 01: ``r_precision(embeddings (N, D), labels (N,)) -> float`` matches PML's AccuracyCalculator
    (leave-one-out, Euclidean distance)."""
    calculator = evaluation.accuracy_calculator(use_faiss=False)
    for seed in range(3):
        embeddings, labels = _random_batch(seed, n=30, dim=2, num_classes=3)
        result = _call(r_precision, embeddings, labels)
        expected = evaluation.retrieval_metrics(embeddings, labels, calculator=calculator)["r_precision"]
        assert isinstance(result, (float, int)) or (torch.is_tensor(result) and result.numel() == 1), \
            f"r_precision should return one number, got {type(result).__name__}."
        result = float(result)
        if abs(result - expected) > 1e-4:
            counts = torch.bincount(labels)
            raise AssertionError(
                f"Expected R-Precision {expected:.4f}, got {result:.4f}. Remember: a query must not retrieve "
                f"itself, and its R is the number of *other* samples of its class (here "
                f"{int(counts[0])} - 1 = {int(counts[0]) - 1} for class 0).")
    print("✓ r_precision matches PML's AccuracyCalculator.")


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-5 * max(1.0, abs(b))


def _compare_loss(name, fn, reference, embeddings, labels, kwargs, hints, mistakes=None, gradient_hint=""):
    """Compare a student's loss (value and gradient) with PML's ``reference`` on one batch. ``mistakes``
    maps a description of a typical mistake to a PML loss factory that makes exactly that mistake."""
    student_input = embeddings.clone().requires_grad_(True)
    result = _call(fn, student_input, labels, **kwargs)
    assert torch.is_tensor(result) and result.numel() == 1, \
        f"{name} should return a scalar tensor, got {type(result).__name__}."
    pml_input = embeddings.clone().requires_grad_(True)
    expected = reference(**kwargs)(pml_input, labels)
    settings = ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "default arguments"
    value, target = result.item(), expected.item()
    if not _close(value, target):
        message = f"{name} with {settings}: expected {target:.6f} (PML), got {value:.6f}. "
        for mistake, factory in (mistakes or {}).items():
            if _close(value, factory(**kwargs)(embeddings, labels).item()):
                raise AssertionError(message + f"That is exactly what you get if {mistake}.")
        raise AssertionError(message + "Common causes: " + "; ".join(hints) + ".")
    assert result.requires_grad, f"{name}'s result has no gradient: compute it with torch operations only."
    result.backward()
    expected.backward()
    assert torch.allclose(student_input.grad, pml_input.grad, atol=1e-5, rtol=1e-4), \
        f"{name} with {settings}: the value is right but the gradient differs from PML's.{gradient_hint}"


def _loss_batches(num_batches: int = 4):
    """Random batches of 16 embeddings: 4 classes and one class of a single sample (no positive), in float64
    so that comparisons to 1e-5 are meaningful."""
    for seed in range(num_batches):
        embeddings, labels = _random_batch(100 + seed, n=16, dim=8, num_classes=4)
        labels[-1] = 4
        yield embeddings.double(), labels


def check_contrastive_loss(contrastive_loss) -> None:
    """Lesson 02: ``contrastive_loss(embeddings, labels, pos_margin=0.0, neg_margin=1.0)`` equals PML's
    ContrastiveLoss (Euclidean distance of L2-normalised embeddings, average over the non-zero terms)."""
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.losses import ContrastiveLoss
    from pytorch_metric_learning.reducers import MeanReducer

    hints = ["the loss of a negative pair is max(0, neg_margin - d), of a positive pair max(0, d - pos_margin)",
             "normalise the embeddings (dim=1) before taking distances",
             "average the positive and the negative terms separately, each over its non-zero terms only, "
             "and add the two averages",
             "a sample is not its own positive: leave out the diagonal"]
    settings = [{}, {"pos_margin": 0.0, "neg_margin": 1.0}, {"pos_margin": 0.25, "neg_margin": 0.9},
                {"pos_margin": 0.1, "neg_margin": 1.6}]
    for (embeddings, labels), kwargs in zip(_loss_batches(), settings):
        _compare_loss("contrastive_loss", contrastive_loss, ContrastiveLoss, embeddings, labels, kwargs, hints, {
            "the embeddings are not L2-normalised": lambda **kw: ContrastiveLoss(
                **kw, distance=LpDistance(normalize_embeddings=False)),
            "each kind of term is averaged over all pairs instead of the non-zero ones":
                lambda **kw: ContrastiveLoss(**kw, reducer=MeanReducer())})
    print("✓ contrastive_loss matches PML's ContrastiveLoss (values and gradients).")


def check_triplet_loss(triplet_loss) -> None:
    """Lesson 03: ``triplet_loss(embeddings, labels, margin=0.05)`` equals PML's TripletMarginLoss over all
    triplets of the batch (Euclidean distance of L2-normalised embeddings, average over non-zero terms)."""
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.losses import TripletMarginLoss
    from pytorch_metric_learning.reducers import MeanReducer

    hints = ["the loss of a triplet is max(0, d(a, p) - d(a, n) + margin)",
             "PML 2.x's default margin is 0.05",
             "normalise the embeddings (dim=1) before taking distances",
             "average over the triplets whose loss is non-zero, not over all triplets",
             "a positive must differ from its anchor: (a, a, n) is not a triplet"]
    settings = [{}, {"margin": 0.05}, {"margin": 0.2}, {"margin": 1.0}]
    for (embeddings, labels), kwargs in zip(_loss_batches(), settings):
        _compare_loss("triplet_loss", triplet_loss, TripletMarginLoss, embeddings, labels, kwargs, hints, {
            "the embeddings are not L2-normalised": lambda **kw: TripletMarginLoss(
                **kw, distance=LpDistance(normalize_embeddings=False)),
            "the loss is averaged over all triplets instead of the non-zero ones":
                lambda **kw: TripletMarginLoss(**kw, reducer=MeanReducer()),
            "the default margin is 0.2 instead of PML's 0.05": lambda **kw: TripletMarginLoss(**{"margin": 0.2, **kw})})
    print("✓ triplet_loss matches PML's TripletMarginLoss (values and gradients).")


def check_circle_loss(circle_loss) -> None:
    """Lesson 04: ``circle_loss(embeddings, labels, m=0.4, gamma=80)`` equals PML's CircleLoss (cosine
    similarity; one term per anchor, averaged over anchors that have a positive and a negative)."""
    from pytorch_metric_learning.losses import CircleLoss
    from pytorch_metric_learning.reducers import MeanReducer

    hints = ["Circle loss works on cosine similarity s, not on a distance: normalise, then s = x @ x.T",
             "positive weights are relu(1 + m - s_p).detach(), negative weights relu(s_n + m).detach()",
             "the logits are -gamma * a_p * (s_p - (1 - m)) and gamma * a_n * (s_n - m)",
             "per anchor: softplus(logsumexp(positive logits) + logsumexp(negative logits))",
             "a sample is not its own positive: leave out the diagonal",
             "average over the anchors that have at least one positive and one negative"]
    settings = [{}, {"m": 0.4, "gamma": 80}, {"m": 0.25, "gamma": 32}, {"m": 0.1, "gamma": 8}]
    for (embeddings, labels), kwargs in zip(_loss_batches(), settings):
        _compare_loss("circle_loss", circle_loss, CircleLoss, embeddings, labels, kwargs, hints, {
            "the mean is taken over all anchors, also those without a positive or a negative":
                lambda **kw: CircleLoss(**kw, reducer=MeanReducer())},
            gradient_hint=" Compute the weights alpha_p and alpha_n from sim.detach(): the paper treats them as "
                          "constants, so no gradient may flow through them.")
    print("✓ circle_loss matches PML's CircleLoss (values and gradients).")


def check_experiment(experiment, *args, methods, splits=("seen", "unseen"), seed: int = 0) -> dict:
    """Experiment exercises (lessons 02-04, 07): run the student's ``experiment(*args)`` and check that it returned
    a results table with ``methods`` on ``splits``; returns the table for the comparison that follows. The random
    generators are seeded first, so the result does not depend on what ran before (a cell answered from the cache
    draws no random numbers, a cell that trains draws many)."""
    session.seed_everything(seed)
    table = _call(experiment, *args)
    check_results_table(table, methods, splits)
    return table


def check_results_table(table, methods, splits=("seen", "unseen")) -> None:
    """Experiment exercises (lessons 02-04): ``table`` is a results table ``{method: {split: {"p1", "r_precision",
    "map_r"}}}`` holding the requested methods and splits, as ``lesson.results_table`` returns it."""
    assert isinstance(table, dict), f"Return a results table (a dict), not {type(table).__name__}: use lesson.results_table."
    missing = [m for m in methods if m not in table]
    assert not missing, f"The table has no row {missing[0]!r}; its rows are {list(table)}. Name the model {missing[0]!r}."
    for method in methods:
        row = table[method]
        assert isinstance(row, dict) and all(split in row for split in splits), \
            f"Row {method!r} should have the test sets {list(splits)}, it has {list(row) if isinstance(row, dict) else row}."
        for split in splits:
            metrics = row[split]
            absent = [m for m in evaluation.METRICS if m not in metrics]
            assert not absent, f"{method!r}, {split}: the metric {absent[0]!r} is missing (keys: p1, r_precision, map_r)."
            bad = {m: metrics[m] for m in evaluation.METRICS if not 0 <= float(metrics[m]) <= 1}
            assert not bad, f"{method!r}, {split}: retrieval metrics lie in [0, 1], got {bad}."
    print(f"✓ the table holds {', '.join(map(repr, methods))} on {', '.join(splits)}: now compare it with your prediction.")
