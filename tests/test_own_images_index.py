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
                               folder.transform(16))
    model, _ = network.embedding_model("resnet18", 8, weights="none")
    index.export(tmp_path / "run", model, gallery, "cpu", "resnet18", 16)
    run = index.load(tmp_path / "run")
    assert run.paths == gallery.paths and run.classes == gallery.classes and run.size == 16
    distances, indices = index.query(run, gallery.paths[:4], k=2)
    assert indices[:, 0].tolist() == [0, 1, 2, 3] and torch.allclose(distances[:, 0], torch.zeros(4), atol=1e-4)


def test_loading_an_unfinished_run_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.pt"):
        index.load(tmp_path)
