import matplotlib.pyplot as plt
import torch
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from course_utils import plotting

NAMES = ("a", "b", "c")


def test_scatter_has_one_labelled_colour_per_class():
    points, labels = torch.randn(30, 2), torch.arange(30) % 3
    fig = plotting.scatter(points, labels, NAMES, title="t")
    ax = fig.axes[0]
    assert isinstance(fig, Figure) and ax.get_title() == "t"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(NAMES)
    assert ax.get_xlabel() == "UMAP 1"
    plt.close(fig)


def test_scatter_draws_into_a_given_axis():
    fig, axes = plt.subplots(1, 2)
    assert plotting.scatter(torch.randn(6, 2), torch.arange(6) % 3, NAMES, ax=axes[1]) is fig
    assert len(axes[1].collections) == 3 and len(axes[0].collections) == 0
    plt.close(fig)


def test_umap_scatter_separates_clusters():
    labels = torch.arange(60) % 3
    embeddings = torch.randn(60, 5) * 0.1 + torch.nn.functional.one_hot(labels, 5).float() * 10
    points = plotting.umap_2d(embeddings, seed=0)
    assert points.shape == (60, 2)
    fig = plotting.umap_scatter(embeddings, labels, NAMES)
    assert isinstance(fig, Figure)
    plt.close(fig)


def test_retrieval_grid_marks_hits_and_misses():
    images, labels = torch.zeros(4, 1, 28, 28), torch.tensor([0, 0, 1, 1])
    indices = torch.tensor([[1, 2], [0, 3]])
    fig = plotting.retrieval_grid(images[:2], labels[:2], images, labels, indices, NAMES)
    axes = fig.axes
    assert len(axes) == 6
    hit, miss = axes[1].spines["left"].get_edgecolor(), axes[2].spines["left"].get_edgecolor()
    assert hit == to_rgba("tab:green") and miss == to_rgba("tab:red")
    plt.close(fig)


def test_training_curves_one_panel_per_key():
    history = [{"epoch": e, "loss": 1 / e, "precision_at_1": e / 10} for e in (1, 2, 3)]
    fig = plotting.training_curves(history, keys=("loss", "precision_at_1"))
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "precision_at_1"]
    assert list(fig.axes[0].lines[0].get_ydata()) == [1, 0.5, 1 / 3]
    plt.close(fig)


def test_show_images_titles():
    fig = plotting.show_images(torch.zeros(3, 1, 28, 28), torch.tensor([2, 0, 1]), NAMES, ncols=2)
    assert [ax.get_title() for ax in fig.axes[:3]] == ["c", "a", "b"]
    plt.close(fig)


def test_metric_bars_one_bar_per_method_and_split():
    table = {m: {"seen": {"map": 0.5}, "unseen": {"map": 0.25}} for m in ("raw", "cnn", "trained")}
    fig = plotting.metric_bars(table, "map")
    ax = fig.axes[0]
    assert len(ax.patches) == 6
    assert [t.get_text() for t in ax.get_xticklabels()] == ["raw", "cnn", "trained"]
    assert sorted({p.get_height() for p in ax.patches}) == [0.25, 0.5]
    plt.close(fig)


def test_triplet_regions_counts_each_kind():
    negatives = torch.tensor([[3.0, 0.0], [0.0, 1.2], [0.5, 0.0], [-0.2, 0.1]])
    fig = plotting.triplet_regions([0.0, 0.0], [1.0, 0.0], negatives, margin=0.5)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[:3] == ["easy negatives (1)", "semi-hard negatives (1)", "hard negatives (2)"]
    assert len(fig.axes[0].patches) == 2
    plt.close(fig)


def test_compare_histories_one_line_per_run():
    histories = {"a": [{"epoch": 1, "m": 0.1}, {"epoch": 2, "m": 0.2}], "b": [{"epoch": 1, "m": 0.3}]}
    fig = plotting.compare_histories(histories, "m")
    assert [line.get_label() for line in fig.axes[0].lines] == ["a", "b"]
    plt.close(fig)
