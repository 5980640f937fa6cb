"""Approximate nearest-neighbour search with faiss: exact ``IndexFlatIP`` against ``IndexIVFFlat`` and
``IndexHNSWFlat`` on up to a million vectors (lesson 09).

The indexes are built in the lesson with faiss's own API; these helpers make the data, time building and
searching, measure recall against exact search and the index's memory, and plot the trade-off. The exact cosine
index that lessons 08 and 10 export beside their networks is here too (``cosine_index``, ``cosine_search``).
"""
import time

import faiss
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F


def cosine_index(embeddings) -> faiss.Index:
    """An exact inner-product index of the L2-normalised embeddings (N, D): inner product = cosine similarity (the
    index lessons 08 and 10 export beside their networks)."""
    unit = F.normalize(torch.as_tensor(embeddings).float(), dim=1)
    index = faiss.IndexFlatIP(unit.shape[1])
    index.add(unit.cpu().numpy())
    return index


def cosine_search(index: faiss.Index, queries, k: int) -> tuple:
    """The ``k`` (at most all) indexed vectors most similar to each query (N, D) of a ``cosine_index``:
    (cosine similarities (N, k), indices (N, k)), most similar first."""
    unit = F.normalize(torch.as_tensor(queries).float(), dim=1)
    similarities, indices = index.search(unit.cpu().numpy(), min(k, index.ntotal))
    return torch.from_numpy(similarities), torch.from_numpy(indices).long()


def replicate_with_noise(embeddings, copies: int, noise: float, seed: int = 0) -> np.ndarray:
    """``copies`` noisy copies of each embedding (N, D) -> unit vectors (N * copies, D), float32, for faiss:
    each copy is the unit embedding plus Gaussian noise of standard deviation ``noise / sqrt(D)`` per coordinate."""
    gen = torch.Generator().manual_seed(seed)
    unit = F.normalize(embeddings.float(), dim=1)
    noisy = unit.repeat(copies, 1)
    noisy += torch.randn(noisy.shape, generator=gen) * (noise / unit.shape[1] ** 0.5)
    return F.normalize(noisy, dim=1).numpy()


def build(index, vectors: np.ndarray, train_size: int = None, seed: int = 0) -> float:
    """Train ``index`` (if it needs it, on ``train_size`` random rows of ``vectors``) and add ``vectors`` (N, D);
    returns the seconds it took."""
    start = time.perf_counter()
    if not index.is_trained:
        rows = np.random.default_rng(seed).choice(len(vectors), min(train_size or len(vectors), len(vectors)),
                                                  replace=False)
        index.train(vectors[np.sort(rows)])
    index.add(vectors)
    return time.perf_counter() - start


def index_bytes(index) -> int:
    """The memory an index holds: the size of faiss's serialisation of it (vectors, lists, graph links)."""
    return int(faiss.serialize_index(index).nbytes)


def timed_search(index, queries: np.ndarray, k: int):
    """``index.search(queries, k)``: (seconds, neighbour indices (Q, k))."""
    start = time.perf_counter()
    _, found = index.search(queries, k)
    return time.perf_counter() - start, found


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """The fraction of each query's exact k nearest neighbours (Q, k) that ``found`` (Q, k) holds, averaged."""
    k = exact.shape[1]
    hits = (found[:, :, None] == exact[:, None, :]).any(axis=1).sum(axis=1)
    return float(hits.mean() / k)


def row(seconds: float, found: np.ndarray, exact: np.ndarray, parameter: str = None, value=None) -> dict:
    """One search's line of a comparison: ``{"parameter", "value", "ms_per_1k", "recall"}`` (milliseconds per
    1,000 queries; recall@k of ``found`` (Q, k) against ``exact`` (Q, k))."""
    return {"parameter": parameter, "value": value, "ms_per_1k": 1e6 * seconds / len(found),
            "recall": recall_at_k(found, exact)}


def sweep(index, queries: np.ndarray, exact: np.ndarray, parameter: str, values) -> list:
    """Search with each value of a search-time ``parameter`` (``"nprobe"`` for IVF, ``"efSearch"`` for HNSW),
    set through ``faiss.ParameterSpace``: one ``row`` per value, recall@k against ``exact`` (Q, k)."""
    rows, space = [], faiss.ParameterSpace()
    for value in values:
        space.set_index_parameter(index, parameter, value)
        seconds, found = timed_search(index, queries, exact.shape[1])
        rows.append(row(seconds, found, exact, parameter, value))
    return rows


def table(results: dict) -> str:
    """``{name: {"build_s", "bytes", "rows": [row, ...]}}`` as a text table: one line per index and setting."""
    lines = [f"{'index':<22}{'setting':>14}{'build (s)':>11}{'memory (MiB)':>14}"
             f"{'ms / 1k queries':>17}{'recall@10':>11}"]
    for name, r in results.items():
        for row in r["rows"]:
            setting = f"{row['parameter']}={row['value']}" if row["parameter"] else "-"
            lines.append(f"{name:<22}{setting:>14}{r['build_s']:>11.2f}{r['bytes'] / 2**20:>14.1f}"
                         f"{row['ms_per_1k']:>17.1f}{row['recall']:>11.3f}")
    return "\n".join(lines)


def tradeoff_plot(results: dict, ax=None, title=None):
    """Recall@k against query time (log scale), one line per index through its search settings; returns the Figure."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2)) if ax is None else (ax.figure, ax)
    for i, (name, r) in enumerate(results.items()):
        x, y = [row["ms_per_1k"] for row in r["rows"]], [row["recall"] for row in r["rows"]]
        line, = ax.plot(x, y, marker="o", label=f"{name} ({r['bytes'] / 2**20:.0f} MiB)")
        for row, xi, yi in zip(r["rows"], x, y):  # the setting beside each point, lines alternating below and above
            if row["parameter"]:
                ax.annotate(f"{row['parameter']}={row['value']}", (xi, yi), textcoords="offset points", fontsize=7,
                            xytext=(5, -11) if i % 2 else (-5, 6), ha="left" if i % 2 else "right",
                            color=line.get_color())
    ax.set_xscale("log")
    ax.set_xlabel("query time (ms per 1,000 queries, log scale)")
    ax.set_ylabel("recall@k against exact search")
    ax.set_title(title or "The recall / speed trade-off")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
