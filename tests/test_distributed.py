"""course_utils.distributed: 2 gloo processes under torchrun against one process (the oracle) on the same batch."""
import json

import pytest
import torch
from pytorch_metric_learning import losses, miners
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

from course_utils import distributed, models

WORLD_SIZE, PER_PROCESS = 2, 8
EPSILON = 0.0  # lesson 09's check: with 0.1 the miner keeps every pair of an untrained network's batch


def test_backend_follows_the_device():
    assert distributed.backend_for(torch.device("cpu")) == "gloo"
    assert distributed.backend_for(torch.device("cuda", 1)) == "nccl"


def test_shard_is_a_naive_split():
    x = torch.arange(12)
    assert [distributed.shard(x, r, 3).tolist() for r in range(3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    with pytest.raises(ValueError, match="equal shares"):
        distributed.shard(x, 0, 5)


def test_relative_difference():
    b = torch.tensor([3.0, 4.0])
    assert distributed.relative_difference(b, b) == 0
    assert distributed.relative_difference(torch.tensor([3.0, 3.0]), b) == pytest.approx(0.2)


def test_main_asks_for_torchrun(monkeypatch, capsys):
    monkeypatch.delenv("RANK", raising=False)
    assert distributed.main(["check", "batch.pt", "--out", "x"]) == 2
    assert "torchrun --nproc_per_node" in capsys.readouterr().err


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    """A tiny global batch (2 × 8 images, 3 classes) and an untrained network, checked by 2 gloo processes."""
    folder = tmp_path_factory.mktemp("check")
    gen = torch.Generator().manual_seed(0)
    net = models.EmbeddingNet(models.ConvTrunk(widths=(8, 8, 8)), 16)
    batch = {"images": torch.randn(WORLD_SIZE * PER_PROCESS, 1, 28, 28, generator=gen),
             "labels": torch.arange(WORLD_SIZE * PER_PROCESS) % 3, "state": net.state_dict(), "embedding_dim": 16,
             "widths": (8, 8, 8)}
    torch.save(batch, folder / "batch.pt")
    distributed.launch(WORLD_SIZE, ["--device", "cpu", "check", folder / "batch.pt", "--epsilon", EPSILON,
                                    "--out", folder / "out"], timeout=120)
    return batch, net.eval(), distributed.load_check(folder / "out")


def one_process(net, batch, rows=slice(None), miner=None):
    loss_fn, miner = losses.MultiSimilarityLoss(), miner or miners.MultiSimilarityMiner(epsilon=EPSILON)
    return distributed.loss_and_gradient(net, loss_fn, miner, batch["images"][rows], batch["labels"][rows])


def test_each_process_reports(checked):
    _, _, ranks = checked
    assert [(r["rank"], r["world_size"], r["backend"]) for r in ranks] == [(0, 2, "gloo"), (1, 2, "gloo")]


def test_wrapped_loss_is_world_size_times_the_one_process_loss(checked):
    batch, net, ranks = checked
    reference = one_process(net, batch)
    for r in ranks:
        assert r["wrapped"]["loss"] == pytest.approx(WORLD_SIZE * reference["loss"], rel=1e-5)
        assert r["wrapped"]["pairs"] == reference["pairs"]  # every pair of the global batch


class KeepEveryPair(miners.BaseMiner):
    """A miner that chooses nothing: every positive and negative pair of the batch, whatever the embeddings."""

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        return lmu.get_all_pairs_indices(labels, ref_labels)


def test_all_pairs_counts_ordered_pairs_without_self_pairs():
    assert distributed.all_pairs(torch.tensor([0, 0, 1, 1, 1])) == (2 + 6, 12)
    assert distributed.all_pairs(torch.tensor([0, 1, 2])) == (0, 6)


def test_the_wrapped_miner_check_passes_the_wrapped_miner(checked):
    batch, net, ranks = checked
    reference = one_process(net, batch)["pairs"]
    assert sum(reference) < sum(distributed.all_pairs(batch["labels"]))  # the miner chooses on this batch
    assert all(distributed.mines_the_global_batch(r["wrapped"]["pairs"], reference, batch["labels"]) for r in ranks)
    assert not any(distributed.mines_the_global_batch(r["unwrapped"]["pairs"], reference, batch["labels"])
                   for r in ranks)  # each process alone mines fewer pairs


def test_the_wrapped_miner_check_fails_a_miner_that_keeps_every_pair(checked):
    batch, net, _ = checked
    keep_all = one_process(net, batch, miner=KeepEveryPair())["pairs"]
    assert keep_all == distributed.all_pairs(batch["labels"])
    # a wrapped keep-every-pair miner finds the same counts as the unwrapped one: equal, and still not passed
    assert not distributed.mines_the_global_batch(keep_all, keep_all, batch["labels"])
    lesson_05_miner = one_process(net, batch, miner=miners.MultiSimilarityMiner(epsilon=0.1))["pairs"]
    assert not distributed.mines_the_global_batch(lesson_05_miner, lesson_05_miner, batch["labels"])


def test_ddp_applies_the_one_process_gradient_with_the_wrappers(checked):
    batch, net, ranks = checked
    reference = one_process(net, batch)["gradient"]
    # float32 sums in another order differ by up to about 1e-5 (seen: 1.2e-5); a wrong gradient by more than 0.1
    for r in ranks:
        assert distributed.relative_difference(r["wrapped"]["gradient"], reference) < 1e-4


def test_without_the_wrappers_each_process_sees_only_its_own_pairs(checked):
    batch, net, ranks = checked
    shares = [one_process(net, batch, slice(i * PER_PROCESS, (i + 1) * PER_PROCESS)) for i in range(WORLD_SIZE)]
    mean_gradient = sum(s["gradient"] for s in shares) / WORLD_SIZE  # what DDP's averaging gives
    for r, share in zip(ranks, shares):
        assert r["unwrapped"]["loss"] == pytest.approx(share["loss"], rel=1e-5)
        assert r["unwrapped"]["pairs"] == share["pairs"]
        assert distributed.relative_difference(r["unwrapped"]["gradient"], mean_gradient) < 1e-4
        assert distributed.relative_difference(r["unwrapped"]["gradient"], one_process(net, batch)["gradient"]) > 1e-3
    assert sum(s["pairs"][1] for s in shares) < one_process(net, batch)["pairs"][1]


def test_train_command_saves_a_network(tmp_path):
    """The training script end to end, tiny: 2 processes × 8 images per step, one epoch of 5 × 16 images."""
    done = distributed.launch(WORLD_SIZE, ["--device", "cpu", "train", "--out", tmp_path, "--epochs", 1,
                                           "--batch-size", 8, "--train-per-class", 16], timeout=120)
    assert "2 processes (gloo)" in done.stdout
    run = json.loads((tmp_path / "run.json").read_text())
    assert (run["world_size"], run["backend"], run["device"], run["images_per_step"]) == (2, "gloo", "cpu", 16)
    assert len(run["history"]) == 1 and run["history"][0]["loss"] > 0
    net = models.EmbeddingNet(models.ConvTrunk(), 64)
    net.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
