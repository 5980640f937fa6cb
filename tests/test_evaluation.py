import math

import pytest
import torch

from course_utils import evaluation


def naive_metrics(embeddings, labels):
    """Precision@1, R-Precision and MAP@R by a plain loop over queries (leave-one-out, Euclidean)."""
    n = len(labels)
    p1, rp, mapr = 0.0, 0.0, 0.0
    for q in range(n):
        others = [j for j in range(n) if j != q]
        others.sort(key=lambda j: math.dist(embeddings[q].tolist(), embeddings[j].tolist()))
        hits = [int(labels[j] == labels[q]) for j in others]
        r = sum(hits)
        p1 += hits[0]
        rp += sum(hits[:r]) / r
        mapr += sum(sum(hits[:i + 1]) / (i + 1) for i in range(r) if hits[i]) / r
    return {"p1": p1 / n, "r_precision": rp / n, "map_r": mapr / n}


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(40) % 4
    return torch.randn(40, 3, generator=gen) + labels[:, None].float() * 0.7, labels


@pytest.mark.parametrize("use_faiss", [True, False])
def test_metrics_match_naive_loop(batch, use_faiss):
    calculator = evaluation.accuracy_calculator(use_faiss=use_faiss)
    metrics = evaluation.retrieval_metrics(*batch, calculator=calculator)
    for name, value in naive_metrics(*batch).items():
        assert metrics[name] == pytest.approx(value, abs=1e-6), name


def test_cosine_metrics_are_euclidean_metrics_of_unit_vectors(batch):
    embeddings, labels = batch
    unit = embeddings / embeddings.norm(dim=1, keepdim=True)
    assert evaluation.retrieval_metrics(embeddings, labels, "cosine") == pytest.approx(naive_metrics(unit, labels))


def test_pairwise_distances_match_loop(batch):
    x, y = batch[0][:5], batch[0][5:12]
    euclid = evaluation.pairwise_distances(x, y)
    cosine = evaluation.pairwise_distances(x, y, "cosine")
    for i in range(5):
        for j in range(7):
            assert euclid[i, j].item() == pytest.approx(math.dist(x[i].tolist(), y[j].tolist()), abs=1e-5)
            cos = torch.dot(x[i], y[j]) / (x[i].norm() * y[j].norm())
            assert cosine[i, j].item() == pytest.approx(1 - cos.item(), abs=1e-5)


def test_top_k_matches_sorting(batch):
    embeddings, _ = batch
    distances, indices = evaluation.top_k(embeddings, embeddings, k=3, exclude_self=True)
    for q in range(len(embeddings)):
        order = sorted((j for j in range(len(embeddings)) if j != q),
                       key=lambda j: math.dist(embeddings[q].tolist(), embeddings[j].tolist()))
        assert indices[q].tolist() == order[:3]
    assert torch.all(distances[:, :-1] <= distances[:, 1:])


def test_mismatched_lengths_are_explained(batch):
    embeddings, labels = batch
    with pytest.raises(ValueError, match="40 rows but its labels have shape \\(39,\\)"):
        evaluation.retrieval_metrics(embeddings, labels[:-1])
    with pytest.raises(ValueError, match="2-D"):
        evaluation.retrieval_metrics(embeddings[0], labels)
    with pytest.raises(TypeError, match="torch tensors"):
        evaluation.retrieval_metrics(embeddings.numpy(), labels)
    with pytest.raises(ValueError, match="distance"):
        evaluation.retrieval_metrics(embeddings, labels, distance="manhattan")


def test_embed_batches_and_restores_mode():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2), torch.nn.Dropout(0.5))
    model.train()
    images, labels = torch.randn(10, 1, 2, 2), torch.arange(10)
    dataset = torch.utils.data.TensorDataset(images, labels)
    embeddings, out_labels = evaluation.embed(model, dataset, torch.device("cpu"), batch_size=3)
    assert model.training
    assert torch.equal(out_labels, labels)
    model.eval()
    assert torch.allclose(embeddings, model(images).detach())


def test_metrics_table_lays_out_methods_and_splits(batch):
    metrics = evaluation.retrieval_metrics(*batch)
    table = evaluation.metrics_table({"raw": {"seen": metrics, "unseen": metrics}, "cnn": {"seen": metrics,
                                                                                        "unseen": metrics}})
    lines = table.splitlines()
    assert len(lines) == 3 and "unseen MAP@R" in lines[0]
    assert lines[1].split()[0] == "raw"
    assert float(lines[2].split()[1]) == pytest.approx(metrics["p1"], abs=1e-3)


def test_evaluate_splits_uses_each_dataset(batch):
    embeddings, labels = batch
    sets = {"a": torch.utils.data.TensorDataset(embeddings, labels),
            "b": torch.utils.data.TensorDataset(embeddings[:20], labels[:20])}
    out = evaluation.evaluate_splits(torch.nn.Identity(), sets, torch.device("cpu"))
    assert out["a"] == pytest.approx(evaluation.retrieval_metrics(embeddings, labels))
    assert out["b"] == pytest.approx(evaluation.retrieval_metrics(embeddings[:20], labels[:20]))


def test_nearest_neighbour_confusion_matches_loop(batch):
    embeddings, labels = batch
    counts = evaluation.nearest_neighbour_confusion(embeddings, labels, num_classes=4)
    expected = torch.zeros(4, 4, dtype=torch.long)
    for q in range(len(labels)):
        nearest = min((j for j in range(len(labels)) if j != q),
                      key=lambda j: math.dist(embeddings[q].tolist(), embeddings[j].tolist()))
        expected[labels[q], labels[nearest]] += 1
    assert torch.equal(counts, expected)
    p1 = evaluation.retrieval_metrics(embeddings, labels)["p1"]
    assert counts.diagonal().sum().item() / len(labels) == pytest.approx(p1)


def test_top_confusions_lists_the_largest_mistakes():
    counts = torch.tensor([[9, 1, 0], [5, 3, 2], [0, 0, 7]])
    assert evaluation.top_confusions(counts, ("a", "b", "c"), n=2) == [("b", "a", 5), ("b", "c", 2)]


def test_metrics_table_shows_the_seed_spread():
    table = {"a": {"seen": {"p1": 0.5, "r_precision": 0.4, "map_r": 0.3, "p1_std": 0.01, "r_precision_std": 0.02,
                            "map_r_std": 0.03}}}
    row = evaluation.metrics_table(table).splitlines()[1].split()
    assert row == ["a", "0.500±0.010", "0.400±0.020", "0.300±0.030"]


def test_metrics_table_shows_a_dash_where_a_row_lacks_a_metric_and_only_the_splits_asked():
    run = lambda v: {"x": {"seen": {"p1": v, "map_r": v, "accuracy": v}, "unseen": {"p1": v, "map_r": v}},
                     "y": {"seen": {"p1": v, "map_r": v}, "unseen": {"p1": v, "map_r": v}}}
    from course_utils import lesson
    text = evaluation.metrics_table(lesson.mean_std([run(0.4), run(0.6)]), metrics=("accuracy", "p1", "map_r"))
    header, x, y = text.splitlines()
    assert "0.500±0.141" in x and y.split()[1] == "–"
    assert "seen accuracy" in header and "unseen accuracy" not in header and "R-Prec" not in header
    rare = {"random": {"seen": {"map_r": 0.5}, "rare": {"map_r": 0.25, "map_r_std": 0.02}, "per class": {"Coat": 0.1}}}
    text = evaluation.metrics_table(rare, splits=("rare",))
    assert text.splitlines()[0].split() == ["rare", "MAP@R"] and "0.250±0.020" in text


# ---------------------------------------------------------------- chunked leave-one-out retrieval (issue 8)

def pml_metrics(embeddings, labels, distance, use_faiss):
    """The oracle: PML's AccuracyCalculator, on all N queries at once."""
    calculator = evaluation.accuracy_calculator(use_faiss=use_faiss)
    return evaluation.retrieval_metrics(embeddings, labels, distance, calculator=calculator)


def assert_same_metrics(got, expected, tol=1e-6):
    assert set(got) == set(evaluation.METRICS)
    for name in evaluation.METRICS:
        assert got[name] == pytest.approx(expected[name], abs=tol, nan_ok=True), name


@pytest.fixture
def uneven():
    """97 points in 8 dims: classes of 41, 30, 20, 5 and 1 (a query alone in its class, which PML leaves out)."""
    gen = torch.Generator().manual_seed(1)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate((41, 30, 20, 5, 1))])
    labels = labels[torch.randperm(97, generator=gen)]
    return torch.randn(97, 8, generator=gen) + labels[:, None].float() * 0.4, labels


@pytest.mark.parametrize("use_faiss", [True, False])
@pytest.mark.parametrize("distance", evaluation.DISTANCES)
@pytest.mark.parametrize("chunk_size", [1, 7, 13, 32, 97, 500, None])
def test_chunked_matches_pml(uneven, distance, use_faiss, chunk_size):
    got = evaluation.chunked_retrieval_metrics(*uneven, distance, chunk_size=chunk_size, use_faiss=use_faiss)
    assert_same_metrics(got, pml_metrics(*uneven, distance, use_faiss))


@pytest.mark.parametrize("use_faiss", [True, False])
@pytest.mark.parametrize("chunk_size", [3, 11, 40])
def test_chunked_matches_naive_loop(batch, use_faiss, chunk_size):
    embeddings, labels = batch
    unit = embeddings / embeddings.norm(dim=1, keepdim=True)
    for distance, points in (("euclidean", embeddings), ("cosine", unit)):
        got = evaluation.chunked_retrieval_metrics(embeddings, labels, distance, chunk_size, use_faiss)
        assert_same_metrics(got, naive_metrics(points, labels))


def tied_set(n=120, seed=0):
    """Points on a small integer grid: many exact ties and duplicates, across classes (exact distances)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 3, (n, 2), generator=gen).float(), torch.randint(0, 4, (n,), generator=gen)


@pytest.mark.parametrize("use_faiss", [True, False])
@pytest.mark.parametrize("chunk_size", [1, 5, 17, 120])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chunked_breaks_ties_as_pml_does(use_faiss, chunk_size, seed):
    embeddings, labels = tied_set(seed=seed)
    got = evaluation.chunked_retrieval_metrics(embeddings, labels, chunk_size=chunk_size, use_faiss=use_faiss)
    assert_same_metrics(got, pml_metrics(embeddings, labels, "euclidean", use_faiss), tol=1e-12)


@pytest.mark.parametrize("use_faiss", [True, False])
def test_duplicates_that_push_a_query_out_of_its_neighbours(use_faiss):
    # 8 copies of one point, classes of 2: k + 1 = 2 neighbours among 8 at distance 0, so most queries do not find
    # themselves; PML then drops the last neighbour instead, and so must the chunked path.
    embeddings, labels = torch.zeros(8, 3), torch.arange(8) // 2
    expected = pml_metrics(embeddings, labels, "euclidean", use_faiss)
    for chunk_size in (1, 3, 8):
        got = evaluation.chunked_retrieval_metrics(embeddings, labels, chunk_size=chunk_size, use_faiss=use_faiss)
        assert_same_metrics(got, expected, tol=1e-12)


def test_drop_self_removes_the_query_or_the_last_neighbour():
    indices = torch.tensor([[5, 2, 9], [4, 6, 7], [1, 8, 3]])  # queries 5, 6, 7 (start=5)
    assert evaluation._drop_self(indices, start=5).tolist() == [[2, 9], [4, 7], [1, 8]]


def test_without_faiss_the_torch_path_runs(uneven, monkeypatch):
    import sys

    monkeypatch.setattr(evaluation, "has_faiss", lambda: False)
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` now fails, as if it were not installed
    for distance in evaluation.DISTANCES:
        got = evaluation.chunked_retrieval_metrics(*uneven, distance, chunk_size=10)
        assert_same_metrics(got, pml_metrics(*uneven, distance, use_faiss=False))
        assert_same_metrics(evaluation.retrieval_metrics(*uneven, distance), got, tol=1e-12)


def test_retrieval_metrics_uses_the_chunked_path(uneven, monkeypatch):
    calls = []
    chunked = evaluation.chunked_retrieval_metrics
    monkeypatch.setattr(evaluation, "chunked_retrieval_metrics", lambda *a, **kw: calls.append(a) or chunked(*a, **kw))
    for distance in evaluation.DISTANCES:
        assert_same_metrics(evaluation.retrieval_metrics(*uneven, distance), pml_metrics(*uneven, distance, None))
    assert len(calls) == 2


def test_lone_queries_give_nan_as_in_pml():
    embeddings, labels = torch.randn(6, 2), torch.arange(6)
    got = evaluation.chunked_retrieval_metrics(embeddings, labels)
    assert all(math.isnan(v) for v in got.values())


def test_chunked_path_never_builds_an_n_by_n_matrix(monkeypatch):
    from torch.utils._python_dispatch import TorchDispatchMode

    class LargestTensor(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if torch.is_tensor(t):
                    LargestTensor.largest = max(LargestTensor.largest, t.numel())
            return out

    n, chunk = 600, 20
    gen = torch.Generator().manual_seed(0)
    embeddings, labels = torch.randn(n, 4, generator=gen), torch.arange(n) % 60  # k = 9
    with LargestTensor():
        evaluation.chunked_retrieval_metrics(embeddings, labels, chunk_size=chunk, use_faiss=False)
    assert LargestTensor.largest <= chunk * n  # one chunk's distances: O(chunk × N), not N × N (or N × k)


def test_default_chunk_fits_the_budget():
    n, k = 1_000_000, 999
    for use_faiss in (True, False):
        chunk = evaluation.default_chunk_size(n, k, use_faiss)
        assert 1 <= chunk <= n
        assert chunk * (64 * (k + 1) + (0 if use_faiss else 4 * n)) <= evaluation.CHUNK_BYTES
    assert evaluation.default_chunk_size(5000, 999, True) == 5000  # the lessons' sets: one search, as PML's


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_chunked_on_the_gpu_matches_pml(uneven):
    embeddings, labels = uneven
    for distance in evaluation.DISTANCES:
        got = evaluation.chunked_retrieval_metrics(embeddings.cuda(), labels.cuda(), distance, chunk_size=13)
        assert_same_metrics(got, pml_metrics(embeddings, labels, distance, use_faiss=False))
