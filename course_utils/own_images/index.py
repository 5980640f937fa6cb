"""Search by cosine similarity with faiss: an index of a gallery's embeddings (the training images, a catalogue,
new products), written to a run folder with the model and read back to answer queries (lesson 10).

A run folder holds ``model.pt`` (see ``network.save_model``), ``index.faiss``, ``gallery.json`` (the path and
class of every indexed image: row ``i`` of the index is ``paths[i]``, its id) and ``recipe.json``. The index is
exact (``flat``: ``IndexFlatIP``) or one of lesson 09's approximate ones (``ivf``, ``hnsw``, ``ivfpq``), all on
inner products of unit vectors, i.e. cosine similarity; ``add`` appends new images to it with the next ids."""
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import torch
import torch.nn.functional as F

from .. import ann, evaluation
from . import folder, network

FILES = {"model": "model.pt", "index": "index.faiss", "gallery": "gallery.json", "recipe": "recipe.json"}
KINDS = ("auto", "flat", "ivf", "hnsw", "ivfpq")
EXACT_UP_TO = 100_000  # auto: exact search up to this many images (milliseconds per query), HNSW beyond


def search(index: faiss.Index, queries, k: int) -> tuple:
    """The k nearest indexed vectors of each query (N, D): (cosine distances (N, k), indices (N, k)), nearest first."""
    similarities, indices = ann.cosine_search(index, queries, k)
    return (1 - similarities).clamp_(min=0), indices


def choose_kind(kind: str, n: int) -> str:
    """The index for ``n`` vectors: ``kind`` itself, or for ``auto`` exact search up to ``EXACT_UP_TO``, else HNSW."""
    if kind not in KINDS:
        raise ValueError(f"index must be one of {KINDS}, not {kind!r}")
    return ("flat" if n <= EXACT_UP_TO else "hnsw") if kind == "auto" else kind


def new_index(kind: str, dim: int, n: int) -> faiss.Index:
    """An empty inner-product index of kind ``flat``, ``ivf`` (about sqrt(n) lists), ``hnsw`` (32 links) or
    ``ivfpq`` (codes of 8 bytes or fewer, fewer bits per code when there are few training vectors)."""
    ip = faiss.METRIC_INNER_PRODUCT
    nlist = max(1, min(int(math.sqrt(n)), n // 39 or 1))  # faiss wants 39 training vectors per list
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        return faiss.IndexHNSWFlat(dim, 32, ip)
    if kind == "ivf":
        return faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, ip)
    codes = next(m for m in (8, 4, 2, 1) if dim % m == 0)
    nbits = max(1, min(8, int(math.log2(max(n, 2)))))  # 2**nbits centroids need as many training vectors
    return faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, codes, nbits, ip)


def build(kind: str, embeddings) -> faiss.Index:
    """A faiss index of the unit ``embeddings`` (N, D), trained on them if its kind needs training."""
    unit = F.normalize(torch.as_tensor(embeddings).float(), dim=1).numpy()
    index = new_index(choose_kind(kind, len(unit)), unit.shape[1], len(unit))
    if not index.is_trained:
        index.train(unit)
    if hasattr(index, "nprobe"):
        index.nprobe = max(1, index.nlist // 4)  # a quarter of the lists: recall close to exact search
    index.add(unit)
    return index


@dataclass
class Gallery:
    """What each row of an index is: ``paths[i]`` and ``classes[labels[i]]`` (the image's folder name)."""

    classes: list = field(default_factory=list)
    paths: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    source: str = "gallery"

    def scan(self, paths) -> folder.Scan:
        """The images of ``paths`` (folders, searched recursively, or files) not yet in the gallery, labelled by
        their folder's name (new names become new classes)."""
        known, samples = set(self.paths), []
        for path in folder.image_files(paths):
            if path not in known:
                name = Path(path).parent.name
                if name not in self.classes:
                    self.classes.append(name)
                samples.append((path, self.classes.index(name)))
                known.add(path)
        return folder.Scan(self.classes, samples)


def preprocess(arch: str, size: int):
    """The evaluation preprocessing of a run: the trunk's weights' resize, centre crop ``size``."""
    return folder.transform(size, resize=network.eval_resize(arch))


def embed_paths(model, found: folder.Scan, size: int, device) -> tuple:
    """(embeddings (N, D), labels (N,)) of the images of a Scan, preprocessed for ``model`` (a loaded run's)."""
    return evaluation.embed(model, folder.ImageList(found, preprocess(model.arch, size)), device, batch_size=64)


def write(run_dir, index: faiss.Index, gallery: Gallery) -> None:
    """Write ``index.faiss`` and ``gallery.json`` (its id -> path and class map)."""
    faiss.write_index(index, str(Path(run_dir) / FILES["index"]))
    (Path(run_dir) / FILES["gallery"]).write_text(json.dumps(vars(gallery), indent=1))


def export(run_dir, model, gallery: folder.ImageList, device, arch: str, size: int, kind: str = "flat",
           source: str = "training", embedded=None) -> faiss.Index:
    """Embed the ``gallery`` images (unless ``embedded`` gives their (embeddings, labels)), and write the model,
    their index and their paths and classes to ``run_dir``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    embeddings, labels = embedded or evaluation.embed(model, gallery, device)
    index = build(kind, embeddings)
    network.save_model(run_dir / FILES["model"], model, arch, size)
    write(run_dir, index, Gallery(list(gallery.classes), list(gallery.paths), labels.tolist(), source))
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
    source: str = "training"
    run_dir: Path = None

    def gallery(self) -> Gallery:
        return Gallery(list(self.classes), list(self.paths), self.labels.tolist(), self.source)


def load(run_dir) -> Run:
    """Read a run folder written by ``export``; a clear FileNotFoundError if a file is missing."""
    run_dir = Path(run_dir)
    for name in ("model", "index", "gallery"):
        if not (run_dir / FILES[name]).is_file():
            raise FileNotFoundError(f"{run_dir / FILES[name]} is missing: is {run_dir} a finished training run?")
    model, size = network.load_model(run_dir / FILES["model"])
    gallery = json.loads((run_dir / FILES["gallery"]).read_text())
    return Run(model, size, faiss.read_index(str(run_dir / FILES["index"])), gallery["classes"],
               gallery["paths"], torch.tensor(gallery["labels"]), gallery.get("source", "training"), run_dir)


def index_gallery(run: Run, paths, device, kind: str = "auto", rebuild: bool = False) -> tuple:
    """Index the images under ``paths`` in ``run``'s folder: added to its gallery (only images not yet in it),
    or a new index when ``rebuild``, when the run's index holds its training images, or when ``kind`` asks for
    another kind of index. Returns (index, gallery, number of images added)."""
    fresh = rebuild or run.source == "training" or (kind != "auto" and kind_of(run.index) != kind)
    gallery = Gallery() if fresh else run.gallery()
    found = gallery.scan(paths)
    if not found.samples:
        return run.index, gallery, 0
    embeddings, labels = embed_paths(run.model, found, run.size, device)
    if fresh:
        index = build(kind, embeddings)
    else:
        index = run.index
        index.add(F.normalize(embeddings, dim=1).numpy())
    gallery.paths += [path for path, _ in found.samples]
    gallery.labels += labels.tolist()
    write(run.run_dir, index, gallery)
    return index, gallery, len(found.samples)


def kind_of(index: faiss.Index) -> str:
    """``flat``, ``ivf``, ``hnsw`` or ``ivfpq``: the kind of a faiss index built by ``build``."""
    index = faiss.downcast_index(index)
    kinds = {faiss.IndexIVFPQ: "ivfpq", faiss.IndexIVFFlat: "ivf", faiss.IndexHNSWFlat: "hnsw"}
    return next((name for cls, name in kinds.items() if isinstance(index, cls)), "flat")


@torch.inference_mode()
def embed_files(run: Run, paths, device="cpu") -> torch.Tensor:
    """The run model's embeddings (N, D) of image files, preprocessed as at training time (centre crop)."""
    steps = preprocess(run.model.arch, run.size)
    images = torch.stack([steps(folder.open_rgb(path)) for path in paths])
    return run.model.to(device)(images.to(device)).cpu()


def query(run: Run, paths, k: int = 8, device="cpu") -> tuple:
    """Search the run's index with image files: (cosine distances (N, k), gallery indices (N, k))."""
    return search(run.index, embed_files(run, paths, device), k)


def query_gallery_metrics(queries, query_labels, gallery, gallery_labels) -> dict:
    """P@1, R-Precision and MAP@R of queries (N, D) searching a separate gallery (M, D) by cosine similarity
    (PML's ``AccuracyCalculator``, ``ref_includes_query=False``); every query's class must be in the gallery."""
    calculator = evaluation.accuracy_calculator()
    unit = [F.normalize(x.float(), dim=1) for x in (queries, gallery)]
    pml = calculator.get_accuracy(unit[0], query_labels, unit[1], gallery_labels, ref_includes_query=False)
    return {short: pml[name] for short, name in evaluation.PML_NAMES.items()}
