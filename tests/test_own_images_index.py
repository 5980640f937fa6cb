"""Lesson 10's faiss index against the course's own exact search, and the run folder it is exported to."""
import pytest
import torch
from own_images_folders import write_folder

from course_utils import ann, evaluation
from course_utils.own_images import folder, index, network


def test_search_equals_exact_cosine_top_k():
    gen = torch.Generator().manual_seed(0)
    references, queries = torch.randn(50, 8, generator=gen) * 3, torch.randn(5, 8, generator=gen)
    distances, indices = index.search(ann.cosine_index(references), queries, k=4)
    expected_d, expected_i = evaluation.top_k(queries, references, 4, distance="cosine")
    assert torch.equal(indices, expected_i) and torch.allclose(distances, expected_d, atol=1e-5)


def test_k_is_capped_at_the_index_size():
    distances, indices = index.search(ann.cosine_index(torch.randn(3, 4)), torch.randn(2, 4), k=10)
    assert distances.shape == indices.shape == (2, 3)


def test_an_exported_run_finds_its_own_training_images(tmp_path):
    gallery = folder.ImageList(folder.scan(write_folder(tmp_path / "images", classes=3, per_class=3)),
                               index.preprocess("resnet18", 16))
    model, _ = network.embedding_model("resnet18", 8, weights="none")
    index.export(tmp_path / "run", model, gallery, "cpu", "resnet18", 16)
    run = index.load(tmp_path / "run")
    assert run.paths == gallery.paths and run.classes == gallery.classes and run.size == 16
    distances, indices = index.query(run, gallery.paths[:4], k=2)
    assert indices[:, 0].tolist() == [0, 1, 2, 3] and torch.allclose(distances[:, 0], torch.zeros(4), atol=1e-4)


def test_loading_an_unfinished_run_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.pt"):
        index.load(tmp_path)


def clustered(n=400, dim=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(20, dim, generator=gen)
    return centres[torch.arange(n) % 20] + 0.3 * torch.randn(n, dim, generator=gen)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw", "ivfpq"])
def test_every_kind_of_index_finds_the_exact_nearest_neighbour_most_of_the_time(kind):
    vectors, queries = clustered(), clustered(50, seed=1)
    built = index.build(kind, vectors)
    assert index.kind_of(built) == kind and built.ntotal == 400
    _, found = index.search(built, queries, 1)
    _, exact = evaluation.top_k(queries, vectors, 1, distance="cosine")
    assert (found[:, 0] == exact[:, 0]).float().mean() >= (1.0 if kind == "flat" else 0.8)


def test_auto_chooses_exact_search_for_small_galleries():
    assert index.choose_kind("auto", 1000) == "flat" and index.choose_kind("auto", 10**6) == "hnsw"
    with pytest.raises(ValueError, match="index must be"):
        index.choose_kind("lsh", 10)


def test_query_gallery_metrics_against_a_naive_loop():
    gen = torch.Generator().manual_seed(0)
    gallery, gallery_labels = torch.randn(30, 4, generator=gen), torch.arange(30) % 3
    queries, query_labels = torch.randn(10, 4, generator=gen), torch.arange(10) % 3
    result = index.query_gallery_metrics(queries, query_labels, gallery, gallery_labels)
    order = evaluation.top_k(queries, gallery, 30, distance="cosine")[1]
    hits = gallery_labels[order] == query_labels[:, None]
    r = 10  # gallery images of each class
    ap = [sum(float(hits[q, :i + 1].sum()) / (i + 1) for i in range(r) if hits[q, i]) / r for q in range(10)]
    assert result["p1"] == pytest.approx(float(hits[:, 0].float().mean()))
    assert result["r_precision"] == pytest.approx(float(hits[:, :r].float().mean()))
    assert result["map_r"] == pytest.approx(sum(ap) / 10)
