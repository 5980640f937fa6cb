"""Lesson 01's exercise checks: ``cosine_distance`` and ``r_precision``, compared with a reference on random
inputs."""
import torch
import torch.nn.functional as F

from .. import evaluation
from .plumbing import call, random_batch


def _assert_tensor(name, result, shape):
    assert torch.is_tensor(result), f"{name} should return a torch tensor, got {type(result).__name__}."
    assert tuple(result.shape) == tuple(shape), \
        f"{name} should return shape {tuple(shape)}, got {tuple(result.shape)}."


def check_cosine_distance(cosine_distance) -> None:
    """Lesson 01: ``cosine_distance(x (N, D), y (M, D)) -> (N, M)`` equals 1 - cosine similarity."""
    for seed in range(3):
        x, _ = random_batch(seed, n=7)
        y, _ = random_batch(seed + 10, n=5)
        result = call(cosine_distance, x, y)
        _assert_tensor("cosine_distance", result, (7, 5))
        expected = 1 - F.normalize(x, dim=1) @ F.normalize(y, dim=1).T
        if torch.allclose(result, 1 - expected, atol=1e-5):
            raise AssertionError("You returned the cosine *similarity*; the distance is 1 - similarity.")
        if torch.allclose(result, 1 - x @ y.T, atol=1e-4):
            raise AssertionError("The rows were not L2-normalised: divide each vector by its norm first.")
        assert torch.allclose(result, expected, atol=1e-5), (
            f"Wrong values: for x[0], y[0] expected {expected[0, 0]:.4f}, got {float(result[0, 0]):.4f}. "
            f"Normalise each row of x and y (dim=1) before the matrix product.")
    same = call(cosine_distance, x, x).diagonal()
    assert torch.allclose(same, torch.zeros_like(same), atol=1e-5), \
        "A vector's cosine distance to itself should be 0."
    print("✓ cosine_distance is correct.")


def check_r_precision(r_precision) -> None:
    """Lesson 01: ``r_precision(embeddings (N, D), labels (N,)) -> float`` matches PML's AccuracyCalculator
    (leave-one-out, Euclidean distance)."""
    calculator = evaluation.accuracy_calculator(use_faiss=False)
    for seed in range(3):
        embeddings, labels = random_batch(seed, n=30, dim=2, num_classes=3)
        result = call(r_precision, embeddings, labels)
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
