"""Figures of the course: UMAP scatter plots, retrieval grids, training curves. Each returns its Figure."""
import sys

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import LogNorm

from .data import denormalize
from .evaluation import DISPLAY_NAMES


def figure_and_axes(ax, figsize):
    """``(figure, ax)``: a new figure of ``figsize`` with one axes if ``ax`` is None, else ``ax`` and its figure (so a
    plot function can draw alone or into a panel of a larger figure)."""
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def class_color(label: int):
    """The same colour for a class in every figure of the course."""
    return plt.get_cmap("tab10")(int(label) % 10)


def load_umap():
    """Import ``umap`` (a few seconds, so only when a projection is asked for) with numba's on-disk cache switched
    on for the functions it compiles. UMAP compiles them in every new process, about 6 s on a 2-core CPU before its
    first projection; with the cache only the first process of a machine pays, and every later notebook kernel
    loads the compiled code (in ``__pycache__`` beside umap's source, or in the user's cache folder)."""
    if "umap" in sys.modules:
        return sys.modules["umap"]
    import numba

    compilers = numba.njit, numba.jit

    def cached(compiler):
        return lambda *args, **options: compiler(*args, **{"cache": True, **options})

    numba.njit, numba.jit = map(cached, compilers)  # only while umap's modules are being defined
    try:
        import umap
    finally:
        numba.njit, numba.jit = compilers
    return umap


def umap_2d(embeddings, distance: str = "euclidean", seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    """Project embeddings (N, D) to 2-D points (N, 2) with UMAP, seeded so reruns agree."""
    umap = load_umap()
    data = torch.as_tensor(embeddings).detach().float().cpu().numpy()
    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=0.1, metric=distance, random_state=seed, n_jobs=1)
    return reducer.fit_transform(data)


def display_name(key: str) -> str:
    """A metric or history key for a reader: ``"unseen map_r"`` -> ``"unseen MAP@R"``."""
    return " ".join(DISPLAY_NAMES.get(word, word) for word in str(key).split(" "))


def scatter_2d(points, labels, class_names, ax=None, title=None, legend: bool = True, axis_name: str = "UMAP"):
    """Scatter 2-D points (N, 2) coloured by class, with a legend of class names; axes "<axis_name> 1/2"."""
    fig, ax = figure_and_axes(ax, (6, 5))
    points, labels = np.asarray(points), np.asarray(labels)
    for c in np.unique(labels):
        mask = labels == c
        ax.scatter(points[mask, 0], points[mask, 1], s=3, alpha=0.6, color=class_color(c),
                   label=class_names[c], rasterized=True)
    ax.set(xticks=[], yticks=[], xlabel=f"{axis_name} 1", ylabel=f"{axis_name} 2", title=title)
    if legend:
        ax.legend(markerscale=4, fontsize=8, loc="best", frameon=True)
    return fig


def umap_scatter(embeddings, labels, class_names, distance: str = "euclidean", seed: int = 0, ax=None,
                 title=None, legend: bool = True):
    """UMAP of embeddings (N, D) drawn as a class-coloured scatter plot."""
    return scatter_2d(umap_2d(embeddings, distance, seed), labels, class_names, ax, title, legend)


def _draw_image(ax, image, title=None, color=None):
    """Draw one image into ``ax``, optionally titled and framed in ``color``: a normalised grey tensor (1, H, W) as
    the lessons' Fashion-MNIST images are, or anything ``imshow`` draws (a colour photo opened by lesson 10)."""
    if torch.is_tensor(image):
        ax.imshow(denormalize(image).squeeze(0).cpu().numpy(), cmap="gray_r", vmin=0, vmax=1)
    else:
        ax.imshow(image)
    ax.set(xticks=[], yticks=[])
    if title:
        ax.set_title(title, fontsize=7, color=color or "black")
    for spine in ax.spines.values():
        spine.set(visible=color is not None, color=color, linewidth=3)


def show_images(images, labels, class_names, ncols: int = 10, title=None):
    """A grid of images (N, 1, H, W), each titled with its class name."""
    nrows = (len(images) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.2 * ncols, 1.4 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, label in zip(axes.flat, images, labels):
        ax.axis("on")
        _draw_image(ax, image, class_names[int(label)])
    fig.suptitle(title)
    return fig


def retrieval_grid(query_images, query_labels, ref_images, ref_labels, indices, class_names, title=None,
                   distances=None, load=None):
    """One row per query: the query, then its retrieved references (N, k indices), titled with their class (and
    distance, if ``distances`` (N, k) are given) and framed green if the class matches, red if not. Images are
    normalised tensors (1, H, W), or anything ``load`` turns into a picture (lesson 10: image files and
    ``own_images.folder.open_rgb``). ``query_labels=None``: queries of unknown class, no frames."""
    load = load or (lambda image: image)
    known, (n, k) = query_labels is not None, indices.shape
    fig, axes = plt.subplots(n, k + 1, figsize=(1.2 * (k + 1), (1.4 if distances is None else 1.7) * n), squeeze=False)
    for row in range(n):
        _draw_image(axes[row, 0], load(query_images[row]),
                    f"query:\n{class_names[int(query_labels[row])]}" if known else "query", "black")
        for col in range(k):
            j = int(indices[row, col])
            hit = known and int(ref_labels[j]) == int(query_labels[row])
            distance = f"\nd={float(distances[row, col]):.2g}" if distances is not None else ""
            title = f"#{col + 1} {class_names[int(ref_labels[j])]}{distance}"
            _draw_image(axes[row, col + 1], load(ref_images[j]), title,
                        ("tab:green" if hit else "tab:red") if known else None)
    fig.suptitle(title or "Nearest neighbours" + (" (green: same class, red: other class)" if known else ""))
    fig.tight_layout()
    return fig


def training_curves(history, keys=("loss",), title=None):
    """One panel per key of the per-epoch ``history`` that ``training.fit`` returns, against the epoch."""
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
    epochs = [row["epoch"] for row in history]
    for ax, key in zip(axes[0], keys):
        ax.plot(epochs, [row[key] for row in history], marker="o")
        ax.set(xlabel="epoch", ylabel=display_name(key), title=display_name(key))
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def metric_bars(table: dict, metric: str = "map_r", ax=None, title=None, ylabel=None):
    """Grouped bars of one metric from ``{method: {split: metrics}}``: one group per method, one bar per split.

    Where the metrics hold ``f"{metric}_std"`` (a mean over seeds), the bars get error bars of one std."""
    fig, ax = figure_and_axes(ax, (7, 3.5))
    methods = list(table)
    splits = list(table[methods[0]])
    width = 0.8 / len(splits)
    for i, split in enumerate(splits):
        values = [table[m][split][metric] for m in methods]
        errors = [table[m][split].get(f"{metric}_std", 0.0) for m in methods]
        bars = ax.bar(np.arange(len(methods)) + (i - (len(splits) - 1) / 2) * width, values, width, label=split,
                      yerr=errors if any(errors) else None, capsize=3)
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set(xticks=np.arange(len(methods)), xticklabels=methods, ylabel=ylabel or display_name(metric),
           ylim=(0, 1.05), title=title or display_name(metric))
    ax.legend(title="classes")
    return fig


def results_figure(table: dict, title: str, metrics=("p1", "map_r")):
    """One lesson's results table as ``metric_bars``, one panel per metric, one above the other (the course
    website's results page): the splits that at least half the methods were measured on, and the methods measured
    on all of them."""
    has = lambda row, split: set(metrics) <= set(row.get(split, {}))
    splits = list(dict.fromkeys(split for row in table.values() for split in row))
    splits = [split for split in splits if 2 * sum(has(row, split) for row in table.values()) >= len(table)]
    table = {method: {split: row[split] for split in splits} for method, row in table.items()
             if all(has(row, split) for split in splits)}
    width = min(14.0, max(6.0, 0.5 * len(table) * len(splits) + 2))
    fig, axes = plt.subplots(len(metrics), 1, figsize=(width, 3.6 * len(metrics)), squeeze=False)
    for ax, metric in zip(axes[:, 0], metrics):
        metric_bars(table, metric, ax=ax)
        ax.tick_params(axis="x", labelrotation=30)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    fig.suptitle(f"{title}: mean over seeds, error bars one std where several seeds ran")
    fig.tight_layout()
    return fig


def compare_histories(histories: dict, key: str, ax=None, title=None):
    """One line per run: ``key`` of each ``training.fit`` history ({name: history}) against the epoch."""
    fig, ax = figure_and_axes(ax, (6, 3.5))
    for name, history in histories.items():
        ax.plot([row["epoch"] for row in history], [row[key] for row in history], marker="o", label=name)
    ax.set(xlabel="epoch", ylabel=display_name(key), title=title or display_name(key))
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend()
    return fig


def contrastive_terms(ax, pos_margin: float = 0.0, neg_margin: float = 1.0):
    """Contrastive loss of one positive and one negative pair against their distance d in [0, 2] (lesson 02)."""
    d = torch.linspace(0, 2, 201)
    ax.plot(d, torch.relu(d - pos_margin), color="tab:green", label=f"positive pair: max(0, d - {pos_margin})")
    ax.plot(d, torch.relu(neg_margin - d), color="tab:red", label=f"negative pair: max(0, {neg_margin} - d)")
    ax.set(xlabel="distance d", ylabel="loss", ylim=(-0.05, 2.05),
           title=f"$m_{{pos}}$={pos_margin}, $m_{{neg}}$={neg_margin}")
    ax.legend(fontsize=7)
    return ax


def circle_pair_loss(s_p, s_n, m: float = 0.4, gamma: float = 80):
    """Circle loss of an anchor with one positive (similarity ``s_p``) and one negative (``s_n``), elementwise."""
    s_p, s_n = torch.as_tensor(s_p), torch.as_tensor(s_n)
    logit = gamma * torch.relu(s_n + m) * (s_n - m) - gamma * torch.relu(1 + m - s_p) * (s_p - (1 - m))
    return torch.nn.functional.softplus(logit)


LOSS_RANGE = (1e-4, 1e4)  # circle_loss_plane's colour scale: losses outside it share its end colours


def circle_loss_plane(ax, m: float = 0.4, gamma: float = 80):
    """Circle loss of one positive (similarity s_p) and one negative (s_n) over the (s_n, s_p) plane, with its
    decision boundary, the circle s_n² + (s_p - 1)² = 2m² (lesson 04)."""
    s_n, s_p = torch.meshgrid(torch.linspace(-1, 1, 201), torch.linspace(-1, 1, 201), indexing="xy")
    # one log scale for every panel and slider setting: the step across the boundary is a fall over orders of
    # magnitude whose width gamma sets (a linear scale shows only the largest values, which grow with gamma)
    loss = circle_pair_loss(s_p, s_n, m, gamma).clamp(LOSS_RANGE[0], LOSS_RANGE[1])
    levels = np.logspace(np.log10(LOSS_RANGE[0] / 2), np.log10(LOSS_RANGE[1] * 2), 25)
    image = ax.contourf(s_n, s_p, loss, levels=levels, norm=LogNorm(), cmap="viridis")
    ax.figure.colorbar(image, ax=ax, label=f"loss (log scale; darkest: below {LOSS_RANGE[0]:g})", format="%.0e")
    radius = (2 * m * m) ** 0.5
    ax.add_patch(plt.Circle((0, 1), radius, fill=False, color="white", linestyle="--", linewidth=2))
    ax.plot([], [], color="white", linestyle="--", label=f"boundary: radius √2·m = {radius:.2f}")
    ax.set(xlabel="$s_n$ (negative similarity)", ylabel="$s_p$ (positive similarity)", aspect="equal",
           xlim=(-1, 1), ylim=(-1, 1), title=f"Circle loss, m={m}, γ={gamma}")
    ax.legend(fontsize=7, loc="lower left", facecolor="grey")
    return ax
