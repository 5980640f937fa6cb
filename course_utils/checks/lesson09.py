"""Lesson 09's exercise check: ``recall_at_k`` against a naive loop over queries."""
import numpy as np
import torch

from .. import ann
from .plumbing import call


def _recall_cases():
    """Exact neighbours (Q, k) and searches to test a recall function on: a hit in another order, misses, faiss's
    -1 for a missing result, and a random search of 50 queries."""
    exact = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    rng = np.random.default_rng(0)
    random_exact = np.stack([rng.choice(100, 10, replace=False) for _ in range(50)])
    random_found = np.stack([rng.choice(100, 10, replace=False) for _ in range(50)])
    return [("the exact neighbours in another order", exact[:, ::-1].copy(), exact),
            ("two of four found in each query, in other places", np.array([[9, 1, 9, 2], [6, 0, 5, 0]]), exact),
            ("faiss's -1 (fewer than k results) never counts", np.array([[1, -1, -1, -1], [-1, -1, -1, -1]]), exact),
            ("50 random queries", random_found, random_exact)]


def check_recall_at_k(recall_at_k) -> None:
    """Lesson 09: ``recall_at_k(found, exact)`` is the mean fraction of each query's exact neighbours found."""
    for name, found, exact in _recall_cases():
        result = call(recall_at_k, found.copy(), exact.copy(), forbid=[(ann, "recall_at_k")])
        if torch.is_tensor(result) or isinstance(result, np.ndarray):
            assert np.size(result) == 1, f"recall_at_k should return one number, got shape {np.shape(result)}."
            result = float(result)
        expected = recall_at_k_reference(found, exact)
        if np.isclose(result, expected):
            continue
        hint = ("the result compares position by position: a neighbour counts wherever it appears in the row"
                if np.isclose(result, float((found == exact).mean())) else
                "for each query count the exact neighbours that appear anywhere in its row of found, divide by k, "
                "then average over the queries")
        raise AssertionError(f"{name}: expected recall {expected:.3f}, got {result}: {hint}.")
    print("✓ recall_at_k measures the share of the exact neighbours an approximate search finds.")


def recall_at_k_reference(found, exact) -> float:
    """``ann.recall_at_k`` as a naive loop over queries: the oracle of the tests and of the exercise's check."""
    k = exact.shape[1]
    return sum(len(set(f.tolist()) & set(e.tolist())) / k for f, e in zip(found, exact)) / len(exact)
