import math

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.colors import to_rgba
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

from course_utils import plotting

NAMES = ("a", "b", "c")


def test_scatter_has_one_labelled_colour_per_class():
    points, labels = torch.randn(30, 2), torch.arange(30) % 3
    fig = plotting.scatter_2d(points, labels, NAMES, title="t")
    ax = fig.axes[0]
    assert isinstance(fig, Figure) and ax.get_title() == "t"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(NAMES)
    assert ax.get_xlabel() == "UMAP 1"
    plt.close(fig)
    fig = plotting.scatter_2d(points, labels, NAMES, axis_name="PCA")
    assert fig.axes[0].get_ylabel() == "PCA 2"
    plt.close(fig)


def test_scatter_draws_into_a_given_axis():
    fig, axes = plt.subplots(1, 2)
    assert plotting.scatter_2d(torch.randn(6, 2), torch.arange(6) % 3, NAMES, ax=axes[1]) is fig
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


def test_retrieval_grid_of_files_with_unknown_query_classes(tmp_path):
    """Lesson 10's grid: image files drawn through ``load``, distances in the titles, no frames without labels."""
    from PIL import Image
    paths = []
    for i, color in enumerate(("red", "blue", "green")):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (20, 30), color).save(paths[-1])
    opened = []
    load = lambda path: (opened.append(path), Image.open(path).convert("RGB"))[1]
    fig = plotting.retrieval_grid(paths[:1], None, paths, torch.tensor([0, 1, 1]), torch.tensor([[2, 0]]), NAMES,
                                  distances=torch.tensor([[0.05, 0.5]]), load=load)
    assert opened == [paths[0], paths[2], paths[0]]
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "query" and titles[1] == f"#1 {NAMES[1]}\nd=0.05" and titles[2] == f"#2 {NAMES[0]}\nd=0.5"
    assert not fig.axes[1].spines["left"].get_visible()
    assert fig.axes[1].get_images()[0].get_array().shape == (30, 20, 3)
    plt.close(fig)


def test_training_curves_one_panel_per_key():
    history = [{"epoch": e, "loss": 1 / e, "seen map_r": e / 10} for e in (1, 2, 3)]
    fig = plotting.training_curves(history, keys=("loss", "seen map_r"))
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "seen MAP@R"]
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
    assert all(c.errorbar is None for c in ax.containers if isinstance(c, BarContainer))
    plt.close(fig)


def test_metric_bars_draw_the_seed_spread():
    table = {m: {"unseen": {"map_r": 0.5, "map_r_std": 0.03}} for m in ("a", "b")}
    ax = plotting.metric_bars(table).axes[0]
    bars = next(c for c in ax.containers if isinstance(c, BarContainer))
    segments = bars.errorbar.lines[2][0].get_segments()
    assert [tuple(seg[:, 1].round(3)) for seg in segments] == [(0.47, 0.53)] * 2
    assert ax.get_ylabel() == "MAP@R"
    plt.close(ax.figure)


def test_compare_histories_one_line_per_run():
    histories = {"a": [{"epoch": 1, "m": 0.1}, {"epoch": 2, "m": 0.2}], "b": [{"epoch": 1, "m": 0.3}]}
    fig = plotting.compare_histories(histories, "m")
    assert [line.get_label() for line in fig.axes[0].lines] == ["a", "b"]
    plt.close(fig)


def test_contrastive_terms_reach_zero_at_the_margins():
    fig, ax = plt.subplots()
    plotting.contrastive_terms(ax, pos_margin=0.5, neg_margin=1.5)
    (d, pos), (_, neg) = (line.get_data() for line in ax.lines)
    assert pos[d.tolist().index(0.5)] == 0 and pos[-1] == pytest.approx(1.5)
    assert neg[0] == pytest.approx(1.5) and neg[d.tolist().index(1.5)] == 0
    plt.close(fig)


@pytest.mark.parametrize("s_p, s_n", [(0.6, 0.2), (0.95, -0.3), (-0.2, 0.7)])
def test_circle_pair_loss_matches_pml(s_p, s_n):
    """One anchor, one positive, one negative: three unit vectors with the given cosine similarities."""
    from pytorch_metric_learning.losses import CircleLoss
    from pytorch_metric_learning.reducers import DoNothingReducer

    a = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    p = torch.tensor([s_p, math.sqrt(1 - s_p ** 2), 0.0], dtype=torch.float64)
    n = torch.tensor([s_n, 0.0, math.sqrt(1 - s_n ** 2)], dtype=torch.float64)
    circle = CircleLoss(m=0.25, gamma=32, reducer=DoNothingReducer())
    per_anchor = circle(torch.stack([a, p, n]), torch.tensor([0, 0, 1]))
    pml = per_anchor["loss"]["losses"][0].item()  # anchor a: its positive p, its negative n
    assert plotting.circle_pair_loss(s_p, s_n, m=0.25, gamma=32).item() == pytest.approx(pml, rel=1e-5)


def test_circle_loss_plane_draws_the_boundary():
    fig, ax = plt.subplots()
    plotting.circle_loss_plane(ax, m=0.25, gamma=32)
    circle = ax.patches[0]
    assert circle.center == (0, 1) and circle.radius == pytest.approx((2 * 0.25 ** 2) ** 0.5)
    on_boundary = torch.tensor(0.25)  # s_n = 0.25 and s_p = 1 - 0.25: the loss is softplus(0) there
    assert plotting.circle_pair_loss(1 - on_boundary, on_boundary, 0.25, 32).item() == pytest.approx(math.log(2))
    plt.close(fig)
