"""How batches are drawn: positive pairs per batch, PML's ``MPerClassSampler`` with clear errors and a seed,
long-tailed data, and a class-balanced sampler with a temperature (lesson 06)."""
import itertools

import matplotlib.pyplot as plt
import numpy as np
import torch
from pytorch_metric_learning import samplers
from pytorch_metric_learning.utils import common_functions as pml_common
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import FaissKNN
from torch.utils.data import Sampler, TensorDataset

from . import data, evaluation

# ---------------------------------------------------------------- positive pairs in a batch


def positive_pairs(labels) -> int:
    """Unordered pairs of one batch's samples (labels (B,)) that share a label."""
    counts = torch.bincount(torch.as_tensor(labels).long())
    return int((counts * (counts - 1) // 2).sum())


def anchors_without_positive(labels) -> float:
    """The fraction of a batch's samples (labels (B,)) with no other sample of their class in the batch."""
    labels = torch.as_tensor(labels).long()
    return float((torch.bincount(labels)[labels] == 1).float().mean())


def expected_positive_pairs(batch_size: int, class_sizes) -> float:
    """Expected ``positive_pairs`` of a random batch drawn without replacement from classes of ``class_sizes``:
    C(B, 2) pairs, each positive with probability sum n_c (n_c - 1) / (N (N - 1))."""
    sizes = torch.as_tensor(list(class_sizes), dtype=torch.float64)
    total = sizes.sum()
    return batch_size * (batch_size - 1) / 2 * float((sizes * (sizes - 1)).sum() / (total * (total - 1)))


def m_per_class_positive_pairs(batch_size: int, m: int) -> int:
    """Positive pairs of every m-per-class batch: ``batch_size // m`` classes, C(m, 2) pairs each."""
    return batch_size // m * m * (m - 1) // 2


def batch_labels(loader, num_epochs: int = 1) -> list:
    """The label tensor (B,) of every batch of ``num_epochs`` passes over a DataLoader of (x, labels) batches."""
    return [labels for _ in range(num_epochs) for _, labels in loader]


# ---------------------------------------------------------------- MPerClassSampler, with errors that name the fix


def validate_m_per_class(labels, m: int, batch_size: int, length_before_new_iter: int,
                         shuffle: bool = False) -> None:
    """Raise a ValueError naming the fix for each of PML's constraints on ``MPerClassSampler`` that is violated."""
    num_classes = len(torch.as_tensor(labels).unique())
    if shuffle:
        raise ValueError("A DataLoader that gets a sampler must not shuffle (PyTorch refuses both): the sampler "
                         "already decides the order. Leave shuffle=False.")
    if batch_size % m:
        divisors = [d for d in range(1, batch_size + 1) if batch_size % d == 0 and d * num_classes >= batch_size]
        raise ValueError(f"batch_size={batch_size} is not a multiple of m={m}: every batch holds batch_size // m "
                         f"classes of m images. Use batch_size={batch_size - batch_size % m} or "
                         f"{batch_size - batch_size % m + m}, or an m that divides {batch_size} "
                         f"(with {num_classes} classes: m in {divisors}).")
    if m * num_classes < batch_size:
        smallest = next(d for d in range(m, batch_size + 1) if batch_size % d == 0 and d * num_classes >= batch_size)
        raise ValueError(f"m × number of classes = {m} × {num_classes} = {m * num_classes} < batch_size={batch_size}: "
                         f"a batch needs {batch_size // m} different classes and the data has {num_classes}. Use "
                         f"batch_size <= {m * num_classes} (a multiple of m), or m={smallest} "
                         f"({batch_size // smallest} classes per batch).")
    if length_before_new_iter < batch_size:
        raise ValueError(f"length_before_new_iter={length_before_new_iter} < batch_size={batch_size}: an epoch would "
                         f"hold no batch. It is the number of images per epoch: use e.g. len(dataset).")


class SeededSampler(Sampler):
    """A PML sampler run on its own seeded NumPy generator: PML draws from ``c_f.NUMPY_RANDOM`` (NumPy's global
    RNG by default), which this swaps for its own while the sampler draws an epoch. Same seed, same batches."""

    def __init__(self, sampler, seed: int):
        self.sampler, self.rng = sampler, np.random.RandomState(seed)

    def __len__(self):
        return len(self.sampler)

    def __iter__(self):
        saved, pml_common.NUMPY_RANDOM = pml_common.NUMPY_RANDOM, self.rng
        try:
            indices = list(self.sampler)
        finally:
            pml_common.NUMPY_RANDOM = saved
        return iter(indices)


def m_per_class_sampler(labels, m: int, batch_size: int, length_before_new_iter: int, seed: int) -> SeededSampler:
    """``samplers.MPerClassSampler`` after ``validate_m_per_class``, drawing from a generator seeded with ``seed``."""
    validate_m_per_class(labels, m, batch_size, length_before_new_iter)
    return SeededSampler(samplers.MPerClassSampler(labels, m, batch_size, length_before_new_iter), seed)


def m_per_class_loader(dataset: TensorDataset, m: int, batch_size: int, length_before_new_iter: int, seed: int,
                       shuffle: bool = False):
    """A DataLoader of m-per-class batches of ``dataset``: ``length_before_new_iter // batch_size`` per epoch."""
    validate_m_per_class(dataset.tensors[1], m, batch_size, length_before_new_iter, shuffle)
    sampler = m_per_class_sampler(dataset.tensors[1], m, batch_size, length_before_new_iter, seed)
    return data.make_loader(dataset, batch_size, seed=seed, sampler=sampler)


# ---------------------------------------------------------------- long-tailed data


def long_tailed_sizes(largest: int, ratio: float, classes) -> dict:
    """``{class: size}``: sizes falling geometrically from ``largest`` (first class) to ``largest / ratio`` (last)."""
    steps = len(classes) - 1
    return {c: max(1, round(largest * ratio ** (-i / steps))) for i, c in enumerate(classes)}


def long_tailed(dataset: TensorDataset, sizes: dict, seed: int = 0) -> TensorDataset:
    """A random subset of ``dataset`` with ``sizes[c]`` samples of each class c (classes not in ``sizes`` dropped)."""
    images, labels = dataset.tensors
    gen = torch.Generator().manual_seed(seed)
    picks = []
    for c, size in sizes.items():
        idx = (labels == c).nonzero().squeeze(1)
        if size > len(idx):
            raise ValueError(f"class {c} has {len(idx)} samples, fewer than the {size} asked for")
        picks.append(idx[torch.randperm(len(idx), generator=gen)[:size]])
    keep = torch.cat(picks).sort().values
    return TensorDataset(images[keep], labels[keep])


def class_shares(label_batches, classes) -> dict:
    """``{class: fraction of all drawn images}`` over a list of label tensors."""
    drawn = torch.cat(list(label_batches))
    return {c: float((drawn == c).float().mean()) for c in classes}


# ---------------------------------------------------------------- a class-balanced sampler with a temperature


def class_balanced_batches(labels, m: int, batch_size: int, num_batches: int, t: float = 0.0, seed: int = 0):
    """Reference for lesson 06's exercise: indices (num_batches, batch_size) into ``labels`` (N,). Each batch holds
    ``batch_size // m`` different classes, drawn one after the other without replacement, each draw with probability
    proportional to count ** t among the classes left, and m images of each (without replacement if it has m)."""
    if batch_size % m:
        raise ValueError(f"batch_size={batch_size} must be a multiple of m={m}")
    gen = torch.Generator().manual_seed(seed)
    classes, counts = torch.as_tensor(labels).unique(return_counts=True)
    members = [(torch.as_tensor(labels) == c).nonzero().squeeze(1) for c in classes]
    weights = counts.double() ** t
    batches = []
    for _ in range(num_batches):
        picks = []
        for c in torch.multinomial(weights, batch_size // m, replacement=False, generator=gen).tolist():
            n = len(members[c])
            chosen = torch.randperm(n, generator=gen)[:m] if n >= m else torch.randint(n, (m,), generator=gen)
            picks.append(members[c][chosen])
        batches.append(torch.cat(picks))
    return torch.stack(batches)


class ClassBalancedSampler(Sampler):
    """A sampler of ``class_balanced_batches``: ``length_before_new_iter // batch_size`` batches per epoch, a new
    draw every epoch, the same sequence for the same ``seed``."""

    def __init__(self, labels, m: int, batch_size: int, length_before_new_iter: int, t: float, seed: int = 0):
        validate_m_per_class(labels, m, batch_size, length_before_new_iter)
        self.labels, self.m, self.batch_size, self.t, self.seed = torch.as_tensor(labels), m, batch_size, t, seed
        self.num_batches, self.epoch = length_before_new_iter // batch_size, 0

    def __len__(self):
        return self.num_batches * self.batch_size

    def __iter__(self):
        self.epoch += 1
        batches = class_balanced_batches(self.labels, self.m, self.batch_size, self.num_batches, self.t,
                                         seed=self.seed * 1_000_003 + self.epoch)
        return iter(batches.flatten().tolist())


def inclusion_probabilities(counts, k: int, t: float) -> torch.Tensor:
    """Exact probability (C,) that each class is among the k drawn without replacement, each draw with probability
    proportional to count ** t among the classes left. Enumerates the ordered draws: for C up to about 8."""
    weights = torch.as_tensor(list(counts), dtype=torch.float64) ** t
    total, probs = float(weights.sum()), torch.zeros(len(weights), dtype=torch.float64)
    for order in itertools.permutations(range(len(weights)), k):
        p, left = 1.0, total
        for c in order:
            p, left = p * float(weights[c]) / left, left - float(weights[c])
        probs[list(order)] += p
    return probs


# ---------------------------------------------------------------- evaluation: overall and on the rare classes


def per_class_metrics(embeddings, labels) -> dict:
    """Leave-one-out retrieval (cosine) within one set, per class: ``{class: {"p1", "r_precision", "map_r"}}``."""
    embeddings = torch.nn.functional.normalize(embeddings.float(), dim=1)
    calculator = AccuracyCalculator(include=tuple(evaluation.PML_NAMES.values()), k="max_bin_count",
                                    return_per_class=True, knn_func=FaissKNN(), device=torch.device("cpu"))
    pml = calculator.get_accuracy(embeddings, labels, embeddings, labels, ref_includes_query=True)
    classes = labels.unique().tolist()
    return {c: {short: pml[name][i] for short, name in evaluation.PML_NAMES.items()} for i, c in enumerate(classes)}


def mean_cosine(embeddings) -> float:
    """Mean cosine similarity of two different rows of embeddings (N, D): near 1 when the embedding has collapsed."""
    unit = torch.nn.functional.normalize(embeddings.float(), dim=1)
    n = len(unit)
    return float(((unit.sum(0) ** 2).sum() - n) / (n * (n - 1)))


def long_tail_results(embedders: dict, test_sets: dict, rare, device) -> dict:
    """``{name: {"seen", "rare", "unseen", "per class"}}``: retrieval on the seen test set, the same restricted to
    the queries of the ``rare`` classes (still searching all seen test images), the unseen set, and MAP@R per class.
    The seen and unseen entries also hold ``mean_cos``, the mean cosine similarity of two test images."""
    table = {}
    for name, model in embedders.items():
        embeddings, labels = evaluation.embed(model, test_sets["seen"], device)
        per_class, sizes = per_class_metrics(embeddings, labels), torch.bincount(labels)
        mean = lambda classes, m: sum(per_class[c][m] * int(sizes[c]) for c in classes) / sum(
            int(sizes[c]) for c in classes)
        unseen_embeddings, unseen_labels = evaluation.embed(model, test_sets["unseen"], device)
        table[name] = {"seen": {**{m: mean(per_class, m) for m in evaluation.METRICS},
                                "mean_cos": mean_cosine(embeddings)},
                       "rare": {m: mean(rare, m) for m in evaluation.METRICS},
                       "unseen": {**evaluation.retrieval_metrics(unseen_embeddings, unseen_labels, "cosine"),
                                  "mean_cos": mean_cosine(unseen_embeddings)},
                       "per class": {data.CLASS_NAMES[c]: v["map_r"] for c, v in per_class.items()}}
    return table


def splits_of(table: dict, splits=("seen", "rare", "unseen")) -> dict:
    """The same table with only ``splits`` (e.g. to plot it with ``plotting.metric_bars``)."""
    return {name: {s: row[s] for s in splits} for name, row in table.items()}


# ---------------------------------------------------------------- figures


def positive_pairs_plot(batch_size: int, measured: dict, ms=(2, 4, 8), ax=None):
    """Expected positive pairs per batch against the number of classes C (equal class sizes, random batches) and
    for m-per-class batches; ``measured`` = ``{label: (C, [pairs of each batch])}`` drawn as mean ± std."""
    fig, ax = (plt.subplots(figsize=(7, 4)) if ax is None else (ax.figure, ax))
    num_classes = np.unique(np.geomspace(2, 1000, 60).astype(int))
    ax.plot(num_classes, [batch_size * (batch_size - 1) / 2 / c for c in num_classes], color="black",
            label="random batches: C(B, 2) / C")
    for m in ms:
        ax.axhline(m_per_class_positive_pairs(batch_size, m), linestyle="--", color=plt.get_cmap("tab10")(m % 10),
                   label=f"m-per-class, m={m}: B (m - 1) / 2")
    for (name, (c, pairs)), marker in zip(measured.items(), "osD^v"):
        ax.errorbar([c], [np.mean(pairs)], yerr=[np.std(pairs)], fmt=marker, capsize=4, label=f"measured: {name}")
    ax.set(xscale="log", yscale="log", xlabel="number of classes C", ylabel="positive pairs per batch",
           title=f"Positive pairs in a batch of B={batch_size}")
    ax.legend(fontsize=7)
    return fig


def class_share_plot(shares: dict, class_sizes: dict, ax=None):
    """Grouped bars (log scale): each class's share of the drawn images under each sampler (``{sampler: {class:
    share}}``), classes ordered by training size; a dotted line at the uniform share."""
    fig, ax = (plt.subplots(figsize=(8, 3.8)) if ax is None else (ax.figure, ax))
    classes = sorted(class_sizes, key=lambda c: -class_sizes[c])
    width = 0.8 / len(shares)
    for i, (name, share) in enumerate(shares.items()):
        ax.bar(np.arange(len(classes)) + (i - (len(shares) - 1) / 2) * width, [share[c] for c in classes], width,
               label=name)
    ax.axhline(1 / len(classes), color="grey", linestyle=":", label="uniform")
    ax.set(xticks=np.arange(len(classes)), yscale="log", ylabel="share of drawn images",
           xlabel="class (training images)",
           xticklabels=[f"{data.CLASS_NAMES[c]}\n({class_sizes[c]} images)" for c in classes],
           title="How often each class is drawn")
    ax.legend(fontsize=7)
    return fig


def per_class_plot(table: dict, class_sizes: dict, ax=None):
    """MAP@R per seen class (mean ± std over seeds) against the class's number of training images."""
    fig, ax = (plt.subplots(figsize=(7, 3.8)) if ax is None else (ax.figure, ax))
    classes = sorted(class_sizes, key=lambda c: -class_sizes[c])
    for name, row in table.items():
        values = [row["per class"][data.CLASS_NAMES[c]] for c in classes]
        errors = [row["per class"].get(data.CLASS_NAMES[c] + "_std", 0.0) for c in classes]
        ax.errorbar([class_sizes[c] for c in classes], values, yerr=errors, marker="o", capsize=3, label=name)
    for c in classes:
        ax.annotate(data.CLASS_NAMES[c], (class_sizes[c], 0.02), fontsize=7, ha="center")
    ax.margins(x=0.12)
    ax.set(xscale="log", ylim=(0, 1), xlabel="training images of the class", ylabel="MAP@R (seen test images)",
           title="Retrieval per class against its training size")
    ax.legend(fontsize=7)
    return fig
