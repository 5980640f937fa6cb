"""Search by cosine similarity with faiss: an index of the training images' embeddings, written to a run
folder with the model and read back to answer queries (lesson 10).

A run folder holds ``model.pt`` (see ``network.save_model``), ``index.faiss``, ``gallery.json`` (the path
and class of every indexed image, in index order) and ``recipe.json``."""
import json
from dataclasses import dataclass
from pathlib import Path

import faiss
import torch

from .. import ann, evaluation
from . import folder, network

FILES = {"model": "model.pt", "index": "index.faiss", "gallery": "gallery.json", "recipe": "recipe.json"}


def search(index: faiss.Index, queries, k: int) -> tuple:
    """The k nearest indexed vectors of each query (N, D): (cosine distances (N, k), indices (N, k)), nearest first."""
    similarities, indices = ann.cosine_search(index, queries, k)
    return (1 - similarities).clamp_(min=0), indices


def export(run_dir, model, gallery: folder.ImageList, device, arch: str, size: int) -> faiss.Index:
    """Embed the ``gallery`` images, and write the model, their index and their paths and classes to ``run_dir``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    embeddings, labels = evaluation.embed(model, gallery, device)
    index = ann.cosine_index(embeddings)
    faiss.write_index(index, str(run_dir / FILES["index"]))
    network.save_model(run_dir / FILES["model"], model, arch, size)
    entries = {"classes": gallery.classes, "paths": gallery.paths, "labels": labels.tolist()}
    (run_dir / FILES["gallery"]).write_text(json.dumps(entries, indent=1))
    return index


@dataclass
class Run:
    """A trained run read back: model (eval mode), its input size, the index and what each row of it is."""

    model: torch.nn.Module
    size: int
    index: faiss.Index
    classes: list
    paths: list
    labels: torch.Tensor


def load(run_dir) -> Run:
    """Read a run folder written by ``export``; a clear FileNotFoundError if a file is missing."""
    run_dir = Path(run_dir)
    for name in ("model", "index", "gallery"):
        if not (run_dir / FILES[name]).is_file():
            raise FileNotFoundError(f"{run_dir / FILES[name]} is missing: is {run_dir} a finished training run?")
    model, size = network.load_model(run_dir / FILES["model"])
    gallery = json.loads((run_dir / FILES["gallery"]).read_text())
    return Run(model, size, faiss.read_index(str(run_dir / FILES["index"])), gallery["classes"],
               gallery["paths"], torch.tensor(gallery["labels"]))


@torch.inference_mode()
def query(run: Run, paths, k: int = 8, device="cpu") -> tuple:
    """Search the run's index with image files: (cosine distances (N, k), gallery indices (N, k))."""
    preprocess = folder.transform(run.size)
    images = torch.stack([preprocess(folder.open_rgb(path)) for path in paths])
    return search(run.index, run.model.to(device)(images.to(device)).cpu(), k)
