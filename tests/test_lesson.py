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
    compute = lambda: calls.append(1) or {"value": len(calls)}
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


def fingerprint_in(package_parent, compute_module=None) -> str:
    """``lesson.code_fingerprint`` computed in a fresh interpreter on the package copy under ``package_parent``
    (and of ``compute_module.compute`` if given: a module standing for a notebook)."""
    import subprocess
    import sys
    code = ("import sys; from course_utils import lesson; "
            + (f"import {compute_module}; print(lesson.code_fingerprint({compute_module}.compute))" if compute_module
               else "print(lesson.code_fingerprint())"))
    done = subprocess.run([sys.executable, "-c", code], cwd=package_parent, capture_output=True, text=True,
                          env={"PYTHONPATH": str(package_parent), "PATH": "/usr/bin:/bin"}, check=True)
    return done.stdout.strip()


def test_cache_key_changes_when_code_a_cached_run_calls_changes(tmp_path):
    """Edit, in a copy of the package, a function lesson 07's cached runs call (``joint.compare_recipes``) and one
    in a topic module (``sampling``): each gives a new fingerprint; editing ``plotting`` (no cached run draws) does
    not."""
    import shutil
    from pathlib import Path
    source = Path(lesson.__file__).parent
    shutil.copytree(source, tmp_path / "course_utils", ignore=shutil.ignore_patterns("__pycache__"))
    before = fingerprint_in(tmp_path)
    assert before == lesson.code_fingerprint()  # the copy is the package
    seen = {before}
    for module, old, new in (("joint.py", "    torch.manual_seed(seed)\n", "    torch.manual_seed(seed + 1)\n"),
                             ("sampling.py", '"""', '"""Edited. ')):
        path = tmp_path / "course_utils" / module
        assert old in path.read_text()
        path.write_text(path.read_text().replace(old, new, 1))
        seen.add(fingerprint_in(tmp_path))
    assert len(seen) == 3
    plotting = tmp_path / "course_utils" / "plotting.py"
    plotting.write_text(plotting.read_text() + "\n# a new comment\n")
    assert fingerprint_in(tmp_path) in seen


def test_cache_key_follows_a_notebook_function_that_compute_calls(tmp_path):
    """``compute`` is a lambda calling a function of its own module (as lesson 06's cells call the notebook's
    ``train_and_test_samplers``): editing that function's body changes the key, other code of the module does not."""
    import shutil
    from pathlib import Path
    shutil.copytree(Path(lesson.__file__).parent, tmp_path / "course_utils",
                    ignore=shutil.ignore_patterns("__pycache__"))
    notebook = tmp_path / "notebook_cell.py"

    def key_with(body, other="x = 1"):
        notebook.write_text(f"{other}\n\ndef helper(seed):\n    return {body}\n\n\ncompute = lambda: helper(0)\n")
        return fingerprint_in(tmp_path, "notebook_cell")

    first = key_with("seed + 1")
    assert key_with("seed + 1", other="x = 2") == first
    assert key_with("seed + 2") != first


def test_results_table_is_evaluation_per_model():
    sets = {"seen": toy_set(40)}
    table = lesson.results_table({"raw": nn.Flatten()}, sets, torch.device("cpu"))
    assert table == {"raw": evaluation.evaluate_splits(nn.Flatten(), sets, torch.device("cpu"), "cosine")}
    assert set(lesson.differences({"a": table["raw"], "b": table["raw"]}, "a", "b", "seen").values()) == {0.0}


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
    net = lesson.network_of(budget, runs["contrastive"][1])
    again = evaluation.evaluate_splits(net, {"seen": toy_set(40)}, torch.device("cpu"), "cosine")
    assert again["seen"]["map_r"] == pytest.approx(values[1])  # evaluated with cosine, like the baselines


def test_class_split_data_uses_the_given_classes(monkeypatch):
    images = lambda seed: torch.randn(40, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    fake = {split: TensorDataset(images(seed), torch.arange(40) % 10) for seed, split in enumerate(("train", "test"))}
    monkeypatch.setattr(data, "fashion_mnist", fake.__getitem__)
    budget = lesson.replace(lesson.QUICK, train_per_class=2, valid_per_class=1, eval_per_class=3)
    sets = lesson.class_split_data(QUICK, budget, (0, 1, 2), (7, 8))
    assert sorted(sets.train.tensors[1].tolist()) == [0, 0, 1, 1, 2, 2]
    assert sorted(sets.valid.tensors[1].tolist()) == [0, 1, 2]
    assert sorted(sets.test["unseen"].tensors[1].tolist()) == [7] * 3 + [8] * 3 and len(sets.test["seen"]) == 9
    assert set(sets.train_unseen.tensors[1].tolist()) == {7, 8}
    assert not set(sets.train.tensors[0].flatten().tolist()) & set(sets.valid.tensors[0].flatten().tolist())
    assert list(lesson.class_split_data(QUICK, budget, tuple(range(10))).test) == ["seen"]
