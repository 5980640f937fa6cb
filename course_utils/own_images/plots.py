"""A retrieval grid for image files of any size and colour (lesson 10); ``plotting.retrieval_grid`` draws the
normalised Fashion-MNIST tensors of the other lessons."""
import matplotlib.pyplot as plt

from .folder import open_rgb


def _show(ax, path, title, color=None):
    ax.imshow(open_rgb(path))
    ax.set(xticks=[], yticks=[])
    ax.set_title(title, fontsize=7, color=color or "black")
    for spine in ax.spines.values():
        spine.set(visible=color is not None, color=color, linewidth=3)


def retrieval_grid(query_paths, ref_paths, indices, ref_labels, class_names, query_labels=None, distances=None,
                   title=None):
    """One row per query file: the query, then its retrieved reference files (indices (N, k)), titled with
    class and cosine distance; framed green (same class) or red when the query's class is known."""
    n, k = indices.shape
    fig, axes = plt.subplots(n, k + 1, figsize=(1.4 * (k + 1), 2.0 * n), squeeze=False)
    known = query_labels is not None
    for row in range(n):
        _show(axes[row, 0], query_paths[row],
              f"query:\n{class_names[int(query_labels[row])]}" if known else "query", "black")
        for col in range(k):
            j = int(indices[row, col])
            hit = known and int(ref_labels[j]) == int(query_labels[row])
            distance = f"\nd={float(distances[row, col]):.2g}" if distances is not None else ""
            _show(axes[row, col + 1], ref_paths[j], f"#{col + 1} {class_names[int(ref_labels[j])]}{distance}",
                  ("tab:green" if hit else "tab:red") if known else None)
    fig.suptitle(title or "Nearest neighbours" + (" (green: same class, red: other class)" if known else ""))
    fig.tight_layout()
    return fig
