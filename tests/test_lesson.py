"""The lesson kit: budgets, the data of a split, training on a budget with model selection, seeds, cache, claims."""
import statistics

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from course_utils import data, evaluation, lesson
from course_utils.session import Config

QUICK, FULL = Config(seed=0, device=torch.device("cpu"), quick=True), Config(0, torch.device("cpu"), False)


def test_budget_changes_apply_in_full_mode_only():
    assert lesson.budget(QUICK, num_epochs=9) == lesson.QUICK
    assert lesson.budget(FULL, num_epochs=9).num_epochs == 9
    assert lesson.budget(FULL).seeds == (0, 1, 2)


@pytest.mark.parametrize("split", ["A", "B"])
def test_lesson_data_keeps_classes_and_images_apart(split):
    budget = lesson.replace(lesson.QUICK, train_per_class=20, valid_per_class=10, eval_per_class=5)
    sets = lesson.lesson_data(QUICK, budget, split)
    seen, unseen = lesson.SPLITS[split]
    assert set(sets.train.tensors[1].tolist()) == set(seen) == set(sets.valid.tensors[1].tolist())
    assert set(sets.test["unseen"].tensors[1].tolist()) == set(unseen) == set(sets.train_unseen.tensors[1].tolist())
    assert torch.bincount(sets.train.tensors[1])[list(seen)].tolist() == [20] * 5
    assert len(sets.valid) == 50 and len(sets.test["seen"]) == 25
    train_images = {tuple(x.flatten().tolist()) for x in sets.train.tensors[0]}
    assert not any(tuple(x.flatten().tolist()) in train_images for x in sets.valid.tensors[0])
    assert "validation: 50" in str(sets)


def toy_set(n=64):
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 4
    return TensorDataset(torch.randn(n, 1, 28, 28, generator=gen) + labels[:, None, None, None], labels)


def test_train_embedder_returns_the_model_of_the_best_epoch():
    budget = lesson.replace(lesson.QUICK, num_epochs=3, batch_size=16, embedding_dim=8)
    scores, states = iter([0.2, 0.9, 0.5]), []

    def eval_fn(model):
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"valid map_r": next(scores)}

    from pytorch_metric_learning import losses
    model, history = lesson.train_embedder(losses.ContrastiveLoss(), toy_set(), budget, QUICK, eval_fn=eval_fn,
                                           progress=False, select_on="valid map_r")
    assert [row["selected"] for row in history] == [False, True, False]
    assert all(torch.equal(v, states[1][k]) for k, v in model.state_dict().items())


def test_train_embedder_is_reproducible_per_seed():
    from pytorch_metric_learning import losses
    budget = lesson.replace(lesson.QUICK, batch_size=16, embedding_dim=8)
    init = lesson.new_embedder(budget).state_dict()
    runs = [lesson.train_embedder(losses.ContrastiveLoss(), toy_set(), budget, QUICK, init_state=init, seed=s,
                                  progress=False)[1][0]["loss"] for s in (1, 1, 2)]
    assert runs[0] == runs[1] != runs[2]


def test_mean_std_matches_statistics():
    tables = [{"m": {"seen": {"p1": v}}} for v in (0.5, 0.7, 0.9)]
    out = lesson.mean_std(tables)["m"]["seen"]
    assert out["p1"] == pytest.approx(0.7) and out["p1_std"] == pytest.approx(statistics.stdev([0.5, 0.7, 0.9]))
    assert lesson.mean_std(tables[:1])["m"]["seen"]["p1_std"] == 0.0


def test_over_seeds_reseeds_before_each_run():
    budget = lesson.replace(lesson.QUICK, seeds=(3, 4, 3))
    draws = []
    lesson.over_seeds(lambda seed: draws.append((seed, torch.rand(1).item())) or {"m": {"s": {"x": 1.0}}}, budget)
    assert draws[0] == draws[2] and draws[0][1] != draws[1][1]


def test_cached_computes_once_per_recipe_in_full_mode(tmp_path, monkeypatch):
    (tmp_path / "data" / "fashion_mnist").mkdir(parents=True)
    (tmp_path / "notebooks").mkdir()
    monkeypatch.setenv("COURSE_ROOT", str(tmp_path))
    calls = []
    compute = lambda: calls.append(1) or {"value": len(calls)}  # noqa: E731
    assert lesson.cached(FULL, "t", {"a": 1}, compute) == {"value": 1}
    assert lesson.cached(FULL, "t", {"a": 1}, compute) == {"value": 1}
    assert lesson.cached(FULL, "t", {"a": 2}, compute) == {"value": 2}
    assert lesson.cached(QUICK, "t", {"a": 1}, compute) == {"value": 3}  # quick mode never reads the cache
    assert len(list((tmp_path / "build" / "cache").glob("*.pt"))) == 2


def slow_cached_call(root, log):
    """One lesson's process asking for a cache entry that takes a second to compute (``compute`` logs each call)."""
    import os
    import time

    def compute():
        with open(log, "a") as f:
            f.write("computed\n")
        time.sleep(1.0)
        return {"value": 7}

    os.environ["COURSE_ROOT"] = root
    return lesson.cached(FULL, "shared", {"a": 1}, compute)


def test_cached_is_computed_once_by_lessons_running_at_once(tmp_path):
    """``run_course --jobs 2``: lessons 02 and 03 ask for the same training run at the same time; one trains it,
    the other waits for it and reads it."""
    from concurrent.futures import ProcessPoolExecutor

    (tmp_path / "data" / "fashion_mnist").mkdir(parents=True)
    (tmp_path / "notebooks").mkdir()
    log = tmp_path / "log.txt"
    with ProcessPoolExecutor(3) as pool:
        answers = list(pool.map(slow_cached_call, [str(tmp_path)] * 3, [str(log)] * 3))
    assert answers == [{"value": 7}] * 3
    assert log.read_text() == "computed\n"
    assert [p.name for p in (tmp_path / "build" / "cache").glob("shared-*")] and not list(
        (tmp_path / "build" / "cache").glob("*.partial"))


def test_selection_data_uses_only_training_images_of_the_seen_classes():
    sets = lesson.selection_data(QUICK, lesson.QUICK)
    assert sets.seen == data.SEEN_CLASSES[:3] and sets.unseen == data.SEEN_CLASSES[3:]
    pool = {img.numpy().tobytes() for img in data.load_fashion_mnist("train").tensors[0]}
    parts = {"train": sets.train, "valid": sets.valid, "seen": sets.test["seen"], "unseen": sets.test["unseen"]}
    keys = {name: [img.numpy().tobytes() for img in ds.tensors[0]] for name, ds in parts.items()}
    assert all(k in pool for ks in keys.values() for k in ks), "every image is a training image"
    for a in parts:
        for b in parts:
            if a < b:
                assert not set(keys[a]) & set(keys[b]), f"{a} and {b} share images"
    for name in ("train", "valid", "seen"):
        assert set(parts[name].tensors[1].tolist()) == set(sets.seen)
    assert set(parts["unseen"].tensors[1].tolist()) == set(sets.unseen)
    assert len(sets.train) == 3 * lesson.QUICK.train_per_class
    assert len(sets.test["unseen"]) == 2 * lesson.QUICK.eval_per_class
    with pytest.raises(ValueError, match="held_out"):
        lesson.selection_data(QUICK, lesson.QUICK, held_out=4)


def test_describe_is_the_same_before_and_after_a_loss_or_miner_is_used():
    from pytorch_metric_learning import losses, miners
    loss, miner = losses.CircleLoss(m=0.4, gamma=80), miners.MultiSimilarityMiner(epsilon=0.1)
    before = lesson.describe(loss), lesson.describe(miner)
    x, y = torch.randn(20, 8), torch.arange(20) % 4
    loss(x, y, miner(x, y))
    assert (lesson.describe(loss), lesson.describe(miner)) == before
    assert before[1]["epsilon"] == 0.1 and before[0]["gamma"] == 80
    assert lesson.describe(miners.MultiSimilarityMiner(epsilon=0.2)) != before[1]


def test_cache_fingerprint_follows_the_training_code_only(monkeypatch):
    before = lesson._code_fingerprint()
    monkeypatch.setattr(lesson, "print_differences", lambda *a: None)  # a printing helper: same key
    assert lesson._code_fingerprint() == before
    monkeypatch.setattr(lesson, "train_embedder", lambda *a: None)  # the training code: a new key
    assert lesson._code_fingerprint() != before


def test_cache_fingerprint_covers_every_kit_name_the_training_code_uses():
    import ast
    import inspect
    import types
    kit = {name for name, obj in vars(lesson).items() if not isinstance(obj, types.ModuleType)
           and getattr(obj, "__module__", lesson.__name__) == lesson.__name__}
    for name in lesson.KIT_TRAINING:
        obj = getattr(lesson, name)
        if not callable(obj):
            continue
        tree = ast.parse(inspect.getsource(obj))
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        arguments = {a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments) for a in n.args + n.kwonlyargs}
        missing = (used & kit) - arguments - set(lesson.KIT_TRAINING) - {"_code_fingerprint"}  # cached: the key itself
        assert not missing, f"{name} uses {missing}: add them to lesson.KIT_TRAINING"


def test_results_table_is_evaluation_per_model():
    sets = {"seen": toy_set(40)}
    table = lesson.results_table({"raw": nn.Flatten()}, sets, torch.device("cpu"))
    assert table == {"raw": evaluation.evaluate_splits(nn.Flatten(), sets, torch.device("cpu"), "cosine")}
    assert set(lesson.differences({"a": table["raw"], "b": table["raw"]}, "a", "b", "seen").values()) == {0.0}


def test_noise_rule():
    assert lesson.clearly_ahead(0.50, 0.40) and not lesson.clearly_ahead(0.42, 0.40)
    assert lesson.tie(0.42, 0.40) and not lesson.tie(0.5, 0.4)


def test_umap_grid_one_panel_per_model_and_set():
    import matplotlib.pyplot as plt
    sets = {"seen": toy_set(40), "unseen": toy_set(40)}
    fig = lesson.umap_grid({"a": nn.Flatten(), "b": nn.Flatten()}, sets, QUICK, per_class=10)
    assert [ax.get_title() for ax in fig.axes] == ["a — seen classes", "b — seen classes", "a — unseen classes",
                                                   "b — unseen classes"]
    plt.close(fig)


def test_describe_names_the_settings_of_pml_objects():
    from pytorch_metric_learning import losses
    described = lesson.describe(losses.ContrastiveLoss(pos_margin=0.1, neg_margin=0.9))
    assert described["class"] == "ContrastiveLoss" and described["pos_margin"] == 0.1
    assert described["distance"]["class"] == "LpDistance"
    assert lesson.describe(losses.ContrastiveLoss(neg_margin=0.8)) != described


def tiny_sets():
    train, valid, test = toy_set(64), toy_set(32), toy_set(40)
    return lesson.LessonData((0, 1, 2, 3), (), train, {"seen": test}, None, valid)


def test_compare_trains_every_seed_and_reports_mean_and_spread():
    from pytorch_metric_learning import losses
    budget = lesson.replace(lesson.QUICK, batch_size=16, embedding_dim=8, num_epochs=2, seeds=(0, 1))
    methods = {"contrastive": lesson.Method(losses.ContrastiveLoss())}
    table, runs = lesson.compare(QUICK, budget, tiny_sets(), methods, baselines={"raw": nn.Flatten()})
    assert list(table) == ["raw", "contrastive"] and [r["seed"] for r in runs["contrastive"]] == [0, 1]
    values = [r["table"]["seen"]["map_r"] for r in runs["contrastive"]]
    assert table["contrastive"]["seen"]["map_r"] == pytest.approx(statistics.fmean(values))
    assert table["contrastive"]["seen"]["map_r_std"] == pytest.approx(statistics.stdev(values))
    assert sum(row["selected"] for row in runs["contrastive"][0]["history"]) == 1  # epoch chosen on validation data
    net = lesson.embedder_of(budget, runs["contrastive"][1])
    again = evaluation.evaluate_splits(net, {"seen": toy_set(40)}, torch.device("cpu"), "cosine")
    assert again["seen"]["map_r"] == pytest.approx(values[1])  # evaluated with cosine, like the baselines


def test_wins_and_ties_use_the_larger_of_noise_and_seed_spread():
    table = {"a": {"s": {"map_r": 0.48, "map_r_std": 0.04}}, "b": {"s": {"map_r": 0.42, "map_r_std": 0.03}},
             "c": {"s": {"map_r": 0.40}}}
    assert not lesson.wins(table, "a", "b", "s") and lesson.ties(table, "a", "b", "s")  # 0.06 < 0.04 + 0.03
    assert lesson.margin(table, "a", "b", "s") == pytest.approx(0.07)
    assert lesson.wins(table, "a", "c", "s") and not lesson.wins(table, "c", "a", "s")
    assert lesson.margin(table, "b", "c", "s") == lesson.NOISE and lesson.ties(table, "b", "c", "s")
