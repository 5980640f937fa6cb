"""Re-ranking by query expansion (lesson 10): each query is replaced by the normalised sum of itself and its top-k
gallery neighbours, then searched again (average query expansion, Chum et al. 2007; with ``alpha > 0`` the
neighbours are weighted by their similarity to the power ``alpha``, alpha-QE of Radenović et al. 2018)."""
import faiss
import torch
import torch.nn.functional as F

from . import index as index_module


def expand(queries, neighbours, similarities, alpha: float = 0.0):
    """Expanded unit queries (N, D) from queries (N, D), their neighbours' vectors (N, k, D) and similarities (N, k):
    ``normalise(q + sum_j s_j ** alpha * g_j)`` (alpha 0: the plain average)."""
    weights = similarities.clamp(min=0) ** alpha
    unit = F.normalize(queries.float(), dim=1)
    return F.normalize(unit + (weights.unsqueeze(-1) * F.normalize(neighbours.float(), dim=-1)).sum(1), dim=1)


def query_expansion(queries, gallery, k: int = 2, alpha: float = 0.0):
    """Expanded unit queries (N, D) with each query's ``k`` most cosine-similar rows of ``gallery`` (M, D)."""
    similarity = F.normalize(queries.float(), dim=1) @ F.normalize(gallery.float(), dim=1).T
    top, nearest = similarity.topk(min(k, len(gallery)), dim=1)
    return expand(queries, F.normalize(gallery.float(), dim=1)[nearest], top, alpha)


def vectors(index: faiss.Index, ids):
    """The indexed vectors (..., D) of ``ids`` (...,), as the index stores them (approximate for ivfpq)."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and ivf.direct_map.type == faiss.DirectMap.NoMap:
        ivf.make_direct_map()
    flat = index.reconstruct_batch(ids.reshape(-1).long().numpy())
    return torch.from_numpy(flat).reshape(*ids.shape, index.d)


def search(index: faiss.Index, queries, k: int, qe_k: int = 2, alpha: float = 0.0) -> tuple:
    """``index.search`` after query expansion with the ``qe_k`` first neighbours found in ``index``: (cosine
    distances (N, k), indices (N, k)) of the expanded queries."""
    distances, nearest = index_module.search(index, queries, qe_k)
    found = nearest >= 0  # an approximate index may find fewer than qe_k
    weights = torch.where(found, 1 - distances, torch.zeros_like(distances))
    neighbours = vectors(index, nearest.clamp(min=0)) * found.unsqueeze(-1)
    return index_module.search(index, expand(queries, neighbours, weights, alpha), k)
