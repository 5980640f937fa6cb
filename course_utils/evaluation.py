"""Embedding a data set and measuring nearest-neighbour retrieval: Precision@1, R-Precision, MAP@R (lesson 01)."""
import torch
import torch.nn.functional as F
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN, FaissKNN

METRICS = ("p1", "r_precision", "map_r")  # the course's short names, used everywhere
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
    """Run ``model`` over ``dataset`` in batches: returns (embeddings (N, D), labels (N,)) on the CPU."""
    was_training = model.training
    model.eval().to(device)
    outputs, labels = [], []
    for images, y in torch.utils.data.DataLoader(dataset, batch_size=batch_size):
        outputs.append(model(images.to(device)).float().cpu())
        labels.append(y)
    model.train(was_training)
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

    Returns ``{"p1", "r_precision", "map_r"}``: PML's metrics under the course's short names."""
    validate_embeddings(embeddings, labels)
    validate_distance(distance)
    embeddings = embeddings.detach().float().cpu()
    if distance == "cosine":  # on unit vectors, Euclidean order = cosine order
        embeddings = F.normalize(embeddings, dim=1)
    calculator = calculator or accuracy_calculator()
    pml = calculator.get_accuracy(embeddings, labels.cpu(), embeddings, labels.cpu(), ref_includes_query=True)
    return {short: pml[name] for short, name in PML_NAMES.items()}


def evaluate(model, dataset, device, distance: str = "euclidean") -> dict:
    """``retrieval_metrics`` of ``model``'s embeddings of ``dataset``."""
    return retrieval_metrics(*embed(model, dataset, device), distance=distance)


def evaluate_splits(model, datasets: dict, device, distance: str = "euclidean") -> dict:
    """``{split name: evaluate(model, dataset)}`` for several evaluation sets (e.g. seen and unseen classes)."""
    return {split: evaluate(model, dataset, device, distance) for split, dataset in datasets.items()}


def _cell(metrics: dict, metric: str) -> str:
    """One value, or ``mean±std`` where the metrics hold a standard deviation over seeds."""
    std = metrics.get(f"{metric}_std")
    return f"{metrics[metric]:.3f}" + (f"±{std:.3f}" if std is not None else "")


def metrics_table(table: dict) -> str:
    """``{method: {split: metrics}}`` as a text table: one row per method, one column per split and metric
    (``mean±std`` where a table holds ``f"{metric}_std"``, as a mean over seeds does)."""
    splits = list(next(iter(table.values())))
    columns = [(split, metric) for split in splits for metric in METRICS]
    cells = {name: [_cell(table[name][split], m) for split, m in columns] for name in table}
    width = max(len(name) for name in table) + 2
    col = max(13, *(len(c) for row in cells.values() for c in row))
    header = " " * width + "  ".join(f"{split + ' ' + DISPLAY_NAMES[m]:>{col}}" for split, m in columns)
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
