"""Lesson 10's query expansion against a naive loop, in memory and through faiss indexes of every kind."""
import math

import pytest
import torch

from course_utils.own_images import index, rerank


@pytest.fixture
def sets():
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 8, generator=gen)
    gallery_labels, query_labels = torch.arange(40) % 4, torch.arange(10) % 4
    gallery = centres[gallery_labels] + 0.7 * torch.randn(40, 8, generator=gen)
    return centres[query_labels] + 0.7 * torch.randn(10, 8, generator=gen), gallery


def unit(v):
    return [x / math.sqrt(sum(y * y for y in v)) for x in v]


def naive_qe(queries, gallery, k, alpha):
    """Each query: normalise(q + sum over its k most cosine-similar gallery rows of s ** alpha * g), unit vectors."""
    out = []
    for q in queries.tolist():
        q = unit(q)
        scored = sorted(((sum(a * b for a, b in zip(q, unit(g))), unit(g)) for g in gallery.tolist()),
                        key=lambda pair: -pair[0])[:k]
        total = [qi + sum(max(s, 0) ** alpha * g[i] for s, g in scored) for i, qi in enumerate(q)]
        out.append(unit(total))
    return torch.tensor(out)


@pytest.mark.parametrize("k, alpha", [(1, 0.0), (3, 0.0), (3, 3.0)])
def test_query_expansion_against_a_naive_loop(sets, k, alpha):
    queries, gallery = sets
    assert torch.allclose(rerank.query_expansion(queries, gallery, k, alpha), naive_qe(queries, gallery, k, alpha),
                          atol=1e-5)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_search_through_a_faiss_index_is_the_search_of_the_expanded_queries(sets, kind):
    queries, gallery = sets
    built = index.build(kind, gallery)
    distances, found = rerank.search(built, queries, k=5, qe_k=3)
    expected = naive_qe(queries, gallery, 3, 0.0) @ torch.nn.functional.normalize(gallery, dim=1).T
    assert torch.equal(found, expected.topk(5, dim=1).indices)
    assert torch.allclose(1 - distances, expected.topk(5, dim=1).values, atol=1e-5)
