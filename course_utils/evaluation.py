"""Embedding a data set and measuring nearest-neighbour retrieval: Precision@1, R-Precision, MAP@R (lesson 01)."""
import torch
import torch.nn.functional as F
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN, FaissKNN

from . import models

METRICS = ("p1", "r_precision", "map_r")  # the course's short names, used everywhere
CHUNK_BYTES = 512 * 2**20  # working memory of one chunk of queries in ``chunked_retrieval_metrics``
PML_NAMES = {"p1": "precision_at_1", "r_precision": "r_precision", "map_r": "mean_average_precision_at_r"}
DISPLAY_NAMES = {"p1": "P@1", "r_precision": "R-Prec", "map_r": "MAP@R"}  # only for printing and plotting
DISTANCES = ("euclidean", "cosine")


def validate_embeddings(embeddings, labels, name: str = "embeddings") -> None:
    """Raise a clear ValueError unless ``embeddings`` is (N, D) and ``labels`` is (N,)."""
    if not torch.is_tensor(embeddings) or not torch.is_tensor(labels):
        raise TypeError(f"{name} and its labels must be torch tensors, "
                        f"got {type(embeddings).__name__} and {type(labels).__name__}")
    if embeddings.dim() != 2:
        raise ValueError(f"{name} must be 2-D (N, D), got shape {tuple(embeddings.shape)}")
    if labels.dim() != 1 or len(labels) != len(embeddings):
        raise ValueError(f"{name} has {len(embeddings)} rows but its labels have shape {tuple(labels.shape)}: "
                         f"give one label per embedding")


def validate_distance(distance: str) -> None:
    """Raise a clear ValueError unless ``distance`` is one the course supports."""
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, not {distance!r}")


@torch.inference_mode()
def embed(model, dataset, device, batch_size: int = 512):
    """Run ``model`` over ``dataset`` in batches: returns (embeddings (N, D), labels (N,)) on the CPU.

    It runs ``models.for_inference(model)``, a copy in eval mode with batch norm folded into the convolutions and
    channels-last weights: the same embeddings up to rounding, 2.5x faster on the course's 2-core CPU
    (``benchmarks/``). ``model`` itself is left as it was, in training mode if it was training."""
    net = models.for_inference(model, device)
    outputs, labels = [], []
    for images, y in torch.utils.data.DataLoader(dataset, batch_size=batch_size):
        outputs.append(net(images.to(device)).float().cpu())
        labels.append(y)
    return torch.cat(outputs), torch.cat(labels)


def pairwise_distances(x, y, distance: str = "euclidean"):
    """Distances (N, M) between rows of x (N, D) and y (M, D); cosine distance is 1 - cosine similarity."""
    validate_distance(distance)
    if distance == "cosine":
        return 1 - F.normalize(x, dim=1) @ F.normalize(y, dim=1).T
    return torch.cdist(x, y)


def top_k(query, reference, k: int, distance: str = "euclidean", exclude_self: bool = False):
    """The k nearest references of each query: (distances (N, k), indices (N, k)), nearest first.

    ``exclude_self=True`` when query and reference are the same set, so nobody retrieves itself.
    """
    dist = pairwise_distances(query, reference, distance)
    if exclude_self:
        dist.fill_diagonal_(float("inf"))
    return dist.topk(k, dim=1, largest=False)


def has_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def accuracy_calculator(k="max_bin_count", use_faiss=None) -> AccuracyCalculator:
    """PML's AccuracyCalculator for our three metrics: faiss's exact kNN when installed, torch's otherwise."""
    use_faiss = has_faiss() if use_faiss is None else use_faiss
    knn = FaissKNN() if use_faiss else CustomKNN(
        LpDistance(normalize_embeddings=False))
    return AccuracyCalculator(include=tuple(PML_NAMES.values()), k=k, knn_func=knn, device=torch.device("cpu"))


def retrieval_metrics(embeddings, labels, distance: str = "euclidean", calculator=None) -> dict:
    """Leave-one-out retrieval within one set: every sample queries all the others.

    Returns ``{"p1", "r_precision", "map_r"}``: PML's metrics under the course's short names. Computed by
    ``chunked_retrieval_metrics`` (PML's numbers, in memory that grows linearly with N), or by ``calculator``,
    a PML ``AccuracyCalculator``, when one is given."""
    if calculator is None:
        return chunked_retrieval_metrics(embeddings, labels, distance)
    validate_embeddings(embeddings, labels)
    embeddings = _search_space(embeddings.detach().cpu(), distance)
    pml = calculator.get_accuracy(embeddings, labels.cpu(), embeddings, labels.cpu(), ref_includes_query=True)
    return {short: pml[name] for short, name in PML_NAMES.items()}


def _search_space(embeddings, distance: str):
    """float32 embeddings (N, D) in which Euclidean order is ``distance``'s order: unit vectors for cosine."""
    validate_distance(distance)
    embeddings = embeddings.float()
    return F.normalize(embeddings, dim=1) if distance == "cosine" else embeddings


def chunked_retrieval_metrics(embeddings, labels, distance: str = "euclidean", chunk_size=None,
                              use_faiss=None) -> dict:
    """``retrieval_metrics`` chunk by chunk of queries: embeddings (N, D), labels (N,) -> ``{"p1", "r_precision",
    "map_r"}``, equal to PML's ``AccuracyCalculator(k="max_bin_count")`` with ``ref_includes_query=True``.

    Each chunk of queries gets its k + 1 nearest samples (k = the largest class size minus one), drops itself
    from them as PML does (or the last one, if tied duplicates pushed it out), and adds its queries' metrics to
    running sums; queries alone in their class are left out, as PML leaves them out. Search is exact: faiss's
    ``IndexFlatL2`` when faiss is installed and the embeddings are on the CPU, else torch's matrix products
    (on the embeddings' device). Cosine distance is Euclidean distance between unit vectors.

    Peak memory: O(N·D) for the embeddings and one copy of them (faiss's index, or the padded reference of the
    matrix product), plus O(chunk·N) for one chunk's distances (torch only; faiss works in fixed blocks) and
    O(chunk·k) for its neighbours — never N × N or N × k. ``chunk_size`` defaults to what fits in
    ``CHUNK_BYTES``; 1M vectors of dimension 128 with k = 999 stay well under 4 GB."""
    validate_embeddings(embeddings, labels)
    x = _search_space(embeddings.detach(), distance)
    labels = labels.to(x.device)
    others = _same_label_counts(labels) - 1  # R of each query: how many other samples share its label
    k = int(others.max()) if len(others) else 0
    if k == 0:  # every query is alone in its class: PML returns nan
        return {name: float("nan") for name in METRICS}
    use_faiss = (has_faiss() and not x.is_cuda) if use_faiss is None else use_faiss
    chunk_size = chunk_size or default_chunk_size(len(x), k, use_faiss)
    totals, counted = torch.zeros(3, dtype=torch.float64, device=x.device), 0
    for start, indices in _nearest_chunks(x, k + 1, chunk_size, use_faiss):
        stop = start + len(indices)
        neighbours = _drop_self(indices.to(x.device), start)
        sums, count = _metric_sums(labels[neighbours] == labels[start:stop, None], others[start:stop])
        totals, counted = totals + sums, counted + count
    return dict(zip(METRICS, (totals / counted).tolist()))


def default_chunk_size(n: int, k: int, use_faiss: bool, budget: int = CHUNK_BYTES) -> int:
    """Queries per chunk whose distances (torch: 4·N bytes a query) and neighbours (~64·k bytes) fit ``budget``."""
    per_query = 64 * (k + 1) + (0 if use_faiss else 4 * n)
    return max(1, min(n, budget // per_query))


def _same_label_counts(labels):
    """For each sample (N,), how many samples (itself included) have its label."""
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    return counts[inverse]


def _nearest_chunks(x, k: int, chunk_size: int, use_faiss: bool):
    """Yield ``(start, indices (chunk, k))``: the k nearest rows of x (N, D), each row itself included."""
    if use_faiss:
        import faiss

        array = x.cpu().contiguous().numpy()
        index = faiss.IndexFlatL2(x.shape[1])
        index.add(array)
        for start in range(0, len(x), chunk_size):
            yield start, torch.from_numpy(index.search(array[start:start + chunk_size], k)[1])
        return
    reference = _cdist_reference(x)
    for start in range(0, len(x), chunk_size):
        yield start, _cdist_rows(x[start:start + chunk_size], reference).topk(k, dim=1, largest=False).indices


def _cdist_reference(x):
    """(``torch.cdist``'s padded reference [x, 1, |x|²] (N, D + 2) for its matrix-product path, built once; x)."""
    squared = x.pow(2).sum(-1, keepdim=True)
    return torch.cat([x, torch.ones_like(squared), squared], -1), x


def _cdist_rows(query, reference):
    """``torch.cdist(query, x)`` (chunk, N), computed as cdist does (bit for bit) from ``_cdist_reference(x)``."""
    padded, x = reference
    if len(query) <= 25 and len(x) <= 25:  # cdist's direct path for tiny sets
        return torch.cdist(query, x)
    squared = query.pow(2).sum(-1, keepdim=True)
    rows = torch.cat([query.mul(-2), squared, torch.ones_like(squared)], -1)
    return rows.matmul(padded.mT).clamp_min_(0).sqrt_()


def _drop_self(indices, start: int):
    """Remove each query's own index from its neighbours (chunk, k + 1) -> (chunk, k), as PML's ``return_results``
    does: where a query is not among them (tied duplicates), its last neighbour goes instead."""
    is_self = indices == torch.arange(start, start + len(indices), device=indices.device)[:, None]
    position = torch.where(is_self.any(1), is_self.int().argmax(1), indices.shape[1] - 1)
    columns = torch.arange(indices.shape[1] - 1, device=indices.device)
    return indices.gather(1, columns + (columns >= position[:, None]))


def _metric_sums(hits, others):
    """Sums of P@1, R-Precision and MAP@R over a chunk's queries, and how many were counted: PML's definitions.

    ``hits`` (chunk, k): neighbour j has the query's label; ``others`` (chunk,): R, the number of other samples
    of the query's class (0: the query is alone in its class and, as in PML, not counted)."""
    counted = others > 0
    hits, r = hits[counted], others[counted].double()
    ranks = torch.arange(1, hits.shape[1] + 1, dtype=torch.float64, device=hits.device)
    relevant = hits & (ranks <= r[:, None])  # a hit within the first R neighbours
    precision_at_hits = relevant.cumsum(1, dtype=torch.float64).div_(ranks).mul_(relevant)
    sums = torch.stack([hits[:, 0].sum().double(), (relevant.sum(1) / r).sum(), (precision_at_hits.sum(1) / r).sum()])
    return sums, len(r)


def evaluate(model, dataset, device, distance: str = "euclidean") -> dict:
    """``retrieval_metrics`` of ``model``'s embeddings of ``dataset``."""
    return retrieval_metrics(*embed(model, dataset, device), distance=distance)


def evaluate_splits(model, datasets: dict, device, distance: str = "euclidean") -> dict:
    """``{split name: evaluate(model, dataset)}`` for several evaluation sets (e.g. seen and unseen classes)."""
    return {split: evaluate(model, dataset, device, distance) for split, dataset in datasets.items()}


def _cell(metrics: dict, metric: str) -> str:
    """One value, ``mean±std`` where the metrics hold a standard deviation over seeds, "–" where it is missing."""
    if metric not in metrics:
        return "–"
    std = metrics.get(f"{metric}_std")
    return f"{metrics[metric]:.3f}" + (f"±{std:.3f}" if std is not None else "")


def metrics_table(table: dict, splits=None, metrics=METRICS) -> str:
    """``{method: {split: metrics}}`` as a text table: one row per method, one column per split and metric that
    some row holds (``mean±std`` where a row holds ``f"{metric}_std"``, as a mean over seeds does; "–" where a row
    lacks it, as a recipe without a classifier head lacks ``accuracy``). ``splits`` default to the first row's."""
    splits = list(next(iter(table.values()))) if splits is None else splits
    columns = [(split, m) for split in splits for m in metrics
               if any(m in row.get(split, {}) for row in table.values())]
    cells = {name: [_cell(table[name].get(split, {}), m) for split, m in columns] for name in table}
    width = max(len(name) for name in table) + 2
    col = max(13, *(len(c) for row in cells.values() for c in row))
    names = {"accuracy": "accuracy", **DISPLAY_NAMES}
    header = " " * width + "  ".join(f"{split + ' ' + names[m]:>{col}}" for split, m in columns)
    rows = [f"{name:<{width}}" + "  ".join(f"{c:>{col}}" for c in cells[name]) for name in table]
    return "\n".join([header] + rows)


def nearest_neighbour_confusion(embeddings, labels, num_classes: int, distance: str = "euclidean"):
    """Counts (C, C): row = a query's class, column = the class of its nearest other sample (lesson 01).

    The diagonal holds the P@1 hits; everything off it is a first-neighbour mistake."""
    validate_embeddings(embeddings, labels)
    _, nearest = top_k(embeddings.float(), embeddings.float(), k=1, distance=distance, exclude_self=True)
    counts = torch.zeros(num_classes, num_classes, dtype=torch.long)
    counts.index_put_((labels.long(), labels[nearest[:, 0]].long()), torch.tensor(1), accumulate=True)
    return counts


def top_confusions(counts, class_names, n: int = 3) -> list:
    """The ``n`` most frequent off-diagonal cells of a confusion count as (query class, found class, count)."""
    off = counts.clone()
    off.fill_diagonal_(0)
    values, flat = off.flatten().topk(n)
    size = counts.shape[1]
    return [(class_names[int(i) // size], class_names[int(i) % size], int(v)) for v, i in zip(values, flat) if v > 0]
