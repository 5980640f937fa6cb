"""course_utils.ann against oracles: exact search by torch, memory by arithmetic (recall against a naive loop:
test_checks_lesson09.py)."""
import faiss
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from course_utils import ann, evaluation


@pytest.fixture(scope="module")
def vectors():
    gen = torch.Generator().manual_seed(0)
    return ann.replicate_with_noise(torch.randn(200, 16, generator=gen), copies=10, noise=0.2, seed=0)


def test_replicate_with_noise(vectors):
    assert vectors.shape == (2000, 16) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    # copy c of embedding i is row c * 200 + i: close to the other copies of i, and seeded
    copies = vectors.reshape(10, 200, 16)
    same = (copies[0] * copies[1]).sum(1).mean()
    other = (copies[0] * np.roll(copies[1], 1, axis=0)).sum(1).mean()
    assert same > 0.9 > 0.2 > abs(other)
    gen = torch.Generator().manual_seed(0)
    assert np.array_equal(vectors, ann.replicate_with_noise(torch.randn(200, 16, generator=gen), 10, 0.2, seed=0))


def test_exact_index_agrees_with_torch(vectors):
    index = faiss.IndexFlatIP(16)
    assert ann.build(index, vectors) >= 0 and index.ntotal == len(vectors)
    seconds, found = ann.timed_search(index, vectors[:50], 5)
    _, expected = evaluation.top_k(torch.from_numpy(vectors[:50]), torch.from_numpy(vectors), 5, "cosine")
    assert seconds >= 0 and ann.recall_at_k(found, expected.numpy()) == 1.0


def test_ivf_and_hnsw_sweeps(vectors):
    exact_index = faiss.IndexFlatIP(16)
    ann.build(exact_index, vectors)
    _, exact = exact_index.search(vectors[:100], 10)
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(16), 16, 16, faiss.METRIC_INNER_PRODUCT)
    ann.build(ivf, vectors, train_size=800)
    rows = ann.sweep(ivf, vectors[:100], exact, "nprobe", (1, 16))
    assert [r["value"] for r in rows] == [1, 16] and ivf.nprobe == 16
    assert rows[0]["recall"] < rows[1]["recall"] == 1.0  # all 16 lists: exact
    hnsw = faiss.IndexHNSWFlat(16, 8, faiss.METRIC_INNER_PRODUCT)
    ann.build(hnsw, vectors)
    rows = ann.sweep(hnsw, vectors[:100], exact, "efSearch", (16, 256))
    assert hnsw.hnsw.efSearch == 256 and rows[1]["recall"] > 0.95


def test_index_bytes_is_the_vectors_for_a_flat_index(vectors):
    index = faiss.IndexFlatIP(16)
    index.add(vectors)
    assert 0 <= ann.index_bytes(index) - vectors.nbytes < 1024  # the vectors plus a small header


def test_table_and_plot(vectors):
    index = faiss.IndexFlatIP(16)
    seconds, found = ann.timed_search(index, vectors[:20], 10)
    results = {"exact": {"build_s": ann.build(index, vectors), "bytes": ann.index_bytes(index),
                         "rows": [ann.row(seconds, found, found)]}}
    assert results["exact"]["rows"][0]["ms_per_1k"] == pytest.approx(1e6 * seconds / 20)
    assert "exact" in ann.table(results) and "1.000" in ann.table(results)
    fig = ann.tradeoff_plot(results)
    ax = fig.axes[0]
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
    plt.close(fig)
