"""Lesson 08's helpers against oracles: augmentation (naive per-image loops), the wider trunk's shapes, the
recipe's training and cache key, and the export / reload round trip (a brute-force cosine search)."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses, miners
from torch.utils.data import TensorDataset

from course_utils import capstone, evaluation, lesson, models
from course_utils.session import Config

CONFIG = Config(seed=0, device=torch.device("cpu"), quick=True)


def images(n=6, seed=0):
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_augment_is_the_identity_in_eval_mode_and_by_default():
    x = images()
    assert torch.equal(capstone.Augment(flip=1.0, shift=3, erase=1.0).eval()(x), x)
    assert torch.equal(capstone.Augment().train()(x), x)


def test_augment_keeps_shapes_and_changes_images_in_training_mode():
    x = images(64)
    torch.manual_seed(0)
    out = capstone.Augment(flip=0.5, shift=2, erase=0.5).train()(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.equal(out, x)


def test_flip_only_flips_some_images_and_leaves_the_rest():
    x = images(64)
    torch.manual_seed(0)
    out = capstone.Augment(flip=0.5, shift=0).train()(x)
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x)]
    kept = [torch.equal(o, i) for o, i in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept)) and 10 < sum(flipped) < 54


def naive_shift(image, dx, dy):
    """One image (C, H, W) shifted by (dx, dy) with border replication, pixel by pixel."""
    c, h, w = image.shape
    out = torch.empty_like(image)
    for y in range(h):
        for x in range(w):
            out[:, y, x] = image[:, min(max(y - dy, 0), h - 1), min(max(x - dx, 0), w - 1)]
    return out


def test_shift_images_matches_a_pixel_loop():
    x = torch.randn(4, 2, 7, 9, generator=torch.Generator().manual_seed(1))
    offsets = torch.tensor([[0, 0], [2, -1], [-3, 2], [1, 3]])
    out = capstone.shift_images(x, offsets)
    for i, (dx, dy) in enumerate(offsets.tolist()):
        assert torch.equal(out[i], naive_shift(x[i], dx, dy))


def test_erase_masks_are_single_squares_of_the_right_size():
    torch.manual_seed(0)
    masks = capstone.erase_masks(images(200), 1.0, (4, 10))
    assert masks.shape == (200, 1, 28, 28)
    for mask in masks[:, 0]:
        rows, cols = mask.any(1).nonzero().squeeze(1), mask.any(0).nonzero().squeeze(1)
        side = len(rows)
        assert 4 <= side <= 10 and len(cols) == side and mask.sum() == side * side
        assert rows.max() - rows.min() + 1 == side  # one contiguous square
    assert not capstone.erase_masks(images(50), 0.0, (4, 10)).any()


def test_augmented_wrapper_exposes_the_embedding_size_and_passes_eval_through():
    net = lesson.new_embedder(lesson.QUICK)
    wrapped = capstone.Augmented(net, capstone.Augment(erase=1.0)).eval()
    x = images()
    assert wrapped.embedding_dim == net.embedding_dim and torch.equal(wrapped(x), net.eval()(x))


@pytest.mark.parametrize("widths,depth", [((64, 128, 256), 2), ((16, 32), 1)])
def test_wide_trunk_output_shape(widths, depth):
    trunk = capstone.WideTrunk(widths=widths, depth=depth)
    assert trunk(images(3)).shape == (3, widths[-1]) and trunk.out_features == widths[-1]
    convs = [m for m in trunk.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == depth * len(widths)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in trunk.modules()) == len(convs)


def test_make_model_and_embedding_net():
    recipe = capstone.Recipe(trunk="wide", augment={"erase": 0.5})
    model = capstone.make_model(recipe, 32)
    embeddings, logits = model.eval()(images(2))
    assert embeddings.shape == (2, 32) and logits.shape == (2, capstone.NUM_CLASSES)
    net = capstone.embedding_net(model)
    assert isinstance(net, models.EmbeddingNet) and isinstance(net.trunk, capstone.WideTrunk)
    assert torch.equal(net(images(2)), embeddings)


def test_onecycle_schedule_warms_up_then_decays():
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    [callback] = capstone.schedule(capstone.Recipe(schedule="onecycle"), optimizer, 100)
    scheduler = callback.scheduler
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    peak = int(np.argmax(rates))
    assert 5 <= peak <= 15 and abs(max(rates) - 1e-3) < 1e-9 and rates[-1] < 1e-5
    assert capstone.schedule(capstone.Recipe(), optimizer, 100) == []
    with pytest.raises(ValueError):
        capstone.schedule(capstone.Recipe(schedule="cosine?"), optimizer, 100)


def toy_sets(classes=(0, 1, 2), unseen=(3, 4), per_class=16):
    """A tiny ``LessonData`` of random images: class c's images are shifted by c, so they can be told apart."""
    def make(cls, n, seed):
        labels = torch.tensor(cls).repeat_interleave(n)
        return TensorDataset(images(len(labels), seed) + labels[:, None, None, None].float(), labels)
    return lesson.LessonData(classes, unseen, make(classes, per_class, 0), {"seen": make(classes, 8, 1),
                             "unseen": make(unseen, 8, 2)}, make(unseen, 8, 3), make(classes, 8, 4))


BUDGET = replace(lesson.QUICK, num_epochs=2, batch_size=16, embedding_dim=8)


@pytest.mark.parametrize("recipe", [
    capstone.Recipe(),  # cross-entropy only
    capstone.Recipe(losses.CircleLoss(m=0.4, gamma=80), miners.MultiSimilarityMiner(0.1), weight=0.1,
                    augment={"erase": 0.5}, schedule="onecycle"),
    capstone.Recipe(losses.ContrastiveLoss(), weight=1.0, ce_weight=0.0, trunk="wide")])
def test_train_returns_a_run_like_lesson_compare(recipe):
    run = capstone.train(recipe, toy_sets(), BUDGET, CONFIG, seed=0)
    assert run["seed"] == 0 and len(run["history"]) == 2 and sum(r["selected"] for r in run["history"]) >= 1
    net = lesson.network_of(BUDGET, run, recipe)
    assert run["table"] == evaluation.evaluate_splits(net, toy_sets().test, CONFIG.device, "cosine")


def test_train_is_reproducible_per_seed():
    recipe = capstone.Recipe(losses.CircleLoss(), miners.MultiSimilarityMiner(0.1), weight=0.1,
                             augment={"flip": 0.5, "shift": 2, "erase": 0.5})
    a, b = (capstone.train(recipe, toy_sets(), BUDGET, CONFIG, seed=3) for _ in range(2))
    assert all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])


def test_run_key_names_every_lever():
    sets, base = toy_sets(), capstone.Recipe(losses.CircleLoss(), weight=0.1)
    key = capstone.run_key(base, sets, BUDGET, 0)
    assert key["metric_loss"]["class"] == "CircleLoss" and key["weight"] == 0.1
    json.dumps(key, default=str)
    changes = [replace(base, augment={}), replace(base, trunk="wide"), replace(base, schedule="onecycle"),
               replace(base, weight=1.0), replace(base, metric_loss=losses.CircleLoss(m=0.25))]
    keys = [capstone.run_key(r, sets, BUDGET, 0) for r in changes]
    assert capstone.run_key(base, sets, replace(BUDGET, seeds=(0, 1, 2)), 0) == key  # one run, whatever the other seeds
    keys += [capstone.run_key(base, sets, replace(BUDGET, embedding_dim=16), 0),
             capstone.run_key(base, sets, BUDGET, 1),
             capstone.run_key(base, toy_sets(classes=(0, 1, 3), unseen=(2, 4)), BUDGET, 0)]
    assert all(k != key for k in keys) and len({json.dumps(k, sort_keys=True, default=str) for k in keys}) == len(keys)


def test_compare_gives_means_and_stds_over_seeds():
    table, runs = lesson.compare(CONFIG, replace(BUDGET, seeds=(0, 1)), toy_sets(), {"ce": capstone.Recipe()},
                                 baselines={"raw pixels": torch.nn.Flatten()})
    assert list(table) == ["raw pixels", "ce"] and len(runs["ce"]) == 2
    p1 = [run["table"]["unseen"]["p1"] for run in runs["ce"]]
    assert table["ce"]["unseen"]["p1"] == pytest.approx(np.mean(p1))
    assert table["ce"]["unseen"]["p1_std"] == pytest.approx(np.std(p1, ddof=1))


def test_combine_applies_every_kept_change_and_merges_augmentations():
    base = capstone.Recipe(losses.CircleLoss(), weight=0.1)
    levers = {"base": base, "flips": replace(base, augment={"flip": 0.5, "shift": 2}),
              "erase": replace(base, augment={"erase": 0.5}), "wide": replace(base, trunk="wide"),
              "layout": replace(base, trunk="layout"), "dim": (base, replace(BUDGET, embedding_dim=32)),
              "long": (base, replace(BUDGET, num_epochs=4)), "weight": replace(base, weight=1.0)}
    recipe, budget = capstone.combine(levers, "base", ["flips", "layout", "erase", "wide", "dim", "long"], BUDGET)
    assert recipe.augment == {"flip": 0.5, "shift": 2, "erase": 0.5} and recipe.trunk == "layout"  # first one wins
    assert recipe.weight == 0.1 and recipe.metric_loss is base.metric_loss
    assert budget == replace(BUDGET, embedding_dim=32, num_epochs=4)
    assert capstone.combine(levers, "base", [], BUDGET) == (base, BUDGET)
    assert capstone.combine(levers, "base", ["wide", "layout"], BUDGET)[0].trunk == "wide"


def test_choose_levers_keeps_clear_wins_without_clear_losses_largest_gain_first():
    effects = {"a": {"p1": (0.01, 0), "map_r": (0.02, 0)}, "b": {"p1": (-0.05, -1), "map_r": (0.04, 1)},
               "c": {"p1": (0.04, 1), "map_r": (-0.001, 0)}, "d": {"p1": (0.0, 0), "map_r": (0.05, 1)}}
    assert capstone.choose_levers(effects) == ["d", "c"]


def test_lever_effects_call_wins_and_ties():
    row = lambda p1, map_r, std=0.0: {"unseen": {"p1": p1, "map_r": map_r, "p1_std": std, "map_r_std": std}}
    table = {"base": row(0.9, 0.5), "better": row(0.9, 0.6), "worse": row(0.8, 0.5), "noisy": row(0.95, 0.535, 0.04)}
    effects = capstone.lever_effects(table, "base", list(table))
    assert list(capstone.lever_effects(table, "base", ["base", "worse"])) == ["worse"]
    assert effects["better"]["map_r"][1] == 1 and effects["better"]["p1"][1] == 0
    assert effects["worse"]["p1"][1] == -1 and effects["noisy"]["map_r"][1] == 0
    assert "MAP@R +0.100 (win)" in capstone.format_effects(effects, "base")


def test_worst_queries_match_a_loop():
    gen = torch.Generator().manual_seed(0)
    embeddings, labels = torch.randn(40, 5, generator=gen), torch.arange(40) % 4
    worst, neighbours = capstone.worst_queries(embeddings, labels, k=5, n=3)
    unit = F.normalize(embeddings, dim=1)
    hits = []
    for i in range(40):
        sims = unit @ unit[i]
        sims[i] = -2
        hits.append(int((labels[sims.topk(5).indices] == labels[i]).sum()))
    assert sorted(hits)[:3] == [hits[i] for i in worst]
    assert all(labels[neighbours[j]].eq(labels[q]).sum() == hits[q] for j, q in enumerate(worst.tolist()))


def test_export_and_reload_give_the_same_embeddings_and_search(tmp_path):
    recipe = capstone.Recipe(trunk="wide")
    net = capstone.make_embedder(recipe, 16).eval()
    x = images(30)
    with torch.no_grad():
        embeddings = net(x)
    labels = torch.arange(30) % 3
    capstone.export(tmp_path / "best", net, {**recipe.settings(), "embedding_dim": 16}, embeddings, labels)
    loaded, settings, index, loaded_labels = capstone.load_export(tmp_path / "best")
    with torch.no_grad():
        assert torch.equal(loaded(x), embeddings)
    assert settings["trunk"] == "wide" and torch.equal(loaded_labels, labels) and index.ntotal == 30
    similarities, ids = capstone.search(loaded, index, x[:5], k=4)
    brute = F.normalize(embeddings, dim=1)[:5] @ F.normalize(embeddings, dim=1).T
    assert torch.equal(ids[:, 0], torch.arange(5))  # each image finds itself first
    assert torch.allclose(similarities, brute.topk(4, dim=1).values, atol=1e-5)
    assert torch.equal(ids, brute.topk(4, dim=1).indices)


def test_plots_return_labelled_figures():
    row = lambda v: {s: {m: v for m in ("p1", "r_precision", "map_r")} for s in ("seen", "unseen")}
    trained = {s: {**m, **{f"{k}_std": 0.01 for k in m}} for s, m in row(0.6).items()}
    table = {"raw pixels": row(0.5), "trained": trained}
    fig = capstone.benchmark_bars(table)
    assert [ax.get_title() for ax in fig.axes] == ["P@1", "R-Prec", "MAP@R"] and fig._suptitle.get_text()
    fig = capstone.curve_plot([3, 5], {"a": row(0.4), "b": row(0.6), "r": row(0.5)}, {3: "a", 5: "b"}, {3: "r", 5: "r"},
                              xlabel="seen classes", title="t")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "seen classes" and len(ax.get_legend().get_texts()) == 4
