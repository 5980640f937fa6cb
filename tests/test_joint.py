"""Joint training (lesson 07): the network, the loss, the loop and the comparisons (the exercise's check is tested in
test_checks_lesson07.py)."""
import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses, miners
from torch.utils.data import TensorDataset

from course_utils import joint, lesson, models
from course_utils.session import Config

CONFIG = Config(seed=0, device=torch.device("cpu"), quick=True)


def test_joint_net_gives_embeddings_and_logits_in_one_pass():
    model = models.JointNet(lesson.new_embedder(lesson.QUICK), 5)
    calls = []
    model.embedding_net.register_forward_hook(lambda *args: calls.append(1))
    embeddings, logits = model(torch.randn(4, 1, 28, 28))
    assert embeddings.shape == (4, 64) and logits.shape == (4, 5) and len(calls) == 1
    assert torch.allclose(logits, model.head(embeddings))


def test_joint_loss_is_the_weighted_sum_and_skips_zero_weights():
    gen = torch.Generator().manual_seed(0)
    embeddings, logits = torch.randn(12, 6, generator=gen), torch.randn(12, 3, generator=gen)
    labels = torch.arange(12) % 3
    metric_loss, miner = losses.CircleLoss(), miners.MultiSimilarityMiner()
    metric = metric_loss(embeddings, labels, miner(embeddings, labels))
    ce = F.cross_entropy(logits, labels)
    assert torch.isclose(joint.joint_loss(embeddings, logits, labels, metric_loss, miner, 0.3), 0.3 * metric + ce)
    assert torch.isclose(joint.joint_loss(embeddings, logits, labels, metric_loss, miner, 1.0, 0.0), metric)
    called = []
    spy = lambda *args: called.append(1)
    assert torch.isclose(joint.joint_loss(embeddings, logits, labels, metric_loss, spy, 0.0), ce)
    assert not called, "a term of weight 0 is not computed"


def tiny_sets(n_per_class=24):
    gen = torch.Generator().manual_seed(0)

    def images(labels):
        return torch.randn(len(labels), 1, 28, 28, generator=gen) + labels[:, None, None, None].float()

    seen, unseen = torch.arange(5 * n_per_class) % 5, 5 + torch.arange(5 * 8) % 5
    train, valid = (TensorDataset(images(y), y) for y in (seen, seen[:40]))
    test = {"seen": TensorDataset(images(seen[:40]), seen[:40]), "unseen": TensorDataset(images(unseen), unseen)}
    return lesson.LessonData((0, 1, 2, 3, 4), (5, 6, 7, 8, 9), train, test, test["unseen"], valid)


BUDGET = lesson.replace(lesson.QUICK, batch_size=40, num_epochs=2, embedding_dim=8, seeds=(0, 1))


def test_train_joint_selects_on_validation_and_writes_fit_history():
    model, history = joint.train_joint(losses.CircleLoss(), miners.MultiSimilarityMiner(), tiny_sets(), BUDGET, CONFIG)
    assert [row["epoch"] for row in history] == [1, 2]
    assert {"loss", "seconds", "valid map_r", "selected"} <= set(history[0])
    assert sum(row["selected"] for row in history) >= 1
    assert isinstance(model, models.JointNet)


def test_compare_recipes_is_reproducible_per_seed_and_keeps_models():
    sets, recipes = tiny_sets(), {"metric only": (1.0, 0.0), "joint": (0.1, 1.0)}
    kept = {}
    first = joint.compare_recipes(recipes, losses.CircleLoss(), miners.MultiSimilarityMiner(), sets, BUDGET, CONFIG, 3,
                                  keep=kept)
    again = joint.compare_recipes(recipes, losses.CircleLoss(), miners.MultiSimilarityMiner(), sets, BUDGET, CONFIG, 3)
    assert first == again and set(kept) == set(recipes)
    assert "accuracy" in first["joint"]["seen"] and "accuracy" not in first["metric only"]["seen"]
    assert set(first["joint"]["unseen"]) == {"p1", "r_precision", "map_r"}


def test_accuracy_counts_the_argmax_of_the_logits():
    model = models.JointNet(lesson.new_embedder(lesson.QUICK), 5)
    dataset = TensorDataset(torch.randn(30, 1, 28, 28), torch.arange(30) % 5)
    with torch.no_grad():
        expected = (model.eval()(dataset.tensors[0])[1].argmax(1) == dataset.tensors[1]).float().mean().item()
    assert joint.accuracy(model, dataset, torch.device("cpu")) == pytest.approx(expected)


def mean_table():
    row = lambda m, s: {"map_r": m, "map_r_std": s}
    return {"a": {"seen": row(0.70, 0.01)}, "b": {"seen": row(0.68, 0.01)}, "c": {"seen": row(0.60, 0.04)},
            "d": {"seen": row(0.64, 0.06)}}


def test_winner_ranks_and_asks_lesson_wins():
    table = mean_table()
    assert joint.winner(table, "seen", "map_r") == ("a", "b", False)  # 0.02: within the noise
    del table["b"]
    assert joint.winner(table, "seen", "map_r") == ("a", "d", False)  # 0.06: above the noise, within 0.01 + 0.06
    del table["d"]
    assert joint.winner(table, "seen", "map_r") == ("a", "c", True)  # 0.10: above the noise and 0.01 + 0.04


def test_choose_recipe_applies_the_rule_in_order():
    row = lambda p1, m, seen: {
        "seen": {"map_r": seen, "map_r_std": 0.01},
        "unseen": {"p1": p1, "p1_std": 0.005, "map_r": m, "map_r_std": 0.005}}
    recipes = {"metric": (1.0, 0.0), "ce": (0.0, 1.0), "joint": (0.1, 1.0)}
    table = {"metric": row(0.90, 0.40, 0.70), "ce": row(0.86, 0.40, 0.80), "joint": row(0.90, 0.40, 0.75)}
    assert joint.clearly_behind(table) == {"metric": [], "ce": [("metric", "p1"), ("joint", "p1")], "joint": []}
    assert joint.choose_recipe(table, recipes) == "joint"  # ce is clearly behind on unseen P@1 (0.04 > noise)
    table["ce"]["unseen"]["p1"] = 0.88
    assert joint.choose_recipe(table, recipes) == "joint"  # a tie now, and joint alone uses both signals
    table["joint"]["unseen"]["p1"] = 0.84
    assert joint.clearly_behind(table)["joint"] == [("metric", "p1"), ("ce", "p1")]
    assert joint.choose_recipe(table, recipes) == "ce"  # joint clearly behind: of the rest, the one with a head
    table["ce"]["unseen"]["map_r"] = 0.30
    assert joint.choose_recipe(table, recipes) == "metric"  # only metric is left
    table["metric"]["unseen"]["p1"] = 0.80
    table["ce"]["unseen"]["map_r"] = 0.40
    assert joint.clearly_behind(table)["ce"] == []
    assert joint.choose_recipe(table, recipes) == "ce"


def test_best_recipe_is_a_copy_of_the_documented_recipe():
    recipe = joint.best_recipe()
    assert recipe == joint.RECIPE and recipe is not joint.RECIPE
    assert {"metric_loss", "miner", "weight", "ce_weight", "chosen_by"} <= set(recipe)
