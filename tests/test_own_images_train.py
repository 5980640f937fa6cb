"""Lesson 10's epoch loop of joint training that checkpoints and resumes."""
import pytest
import torch
from own_images_folders import write_folder
from pytorch_metric_learning import losses, miners, samplers

from course_utils import models, training
from course_utils.own_images import folder, network, train
from course_utils.session import seed_everything


@pytest.mark.parametrize("args, expected", [((32, 4, 5), 20), ((30, 4, 10), 28), ((32, 4, 100), 32)])
def test_batch_size_fits_the_sampler(args, expected):
    assert train.batch_size_for(*args) == expected


def test_batch_size_needs_two_classes():
    with pytest.raises(ValueError, match="at least 2 classes"):
        train.batch_size_for(32, 4, 1)


def setting(root, seed=0):
    """A fresh small run on the folder at ``root`` (a tiny CNN: the loop, not the network, is under test)."""
    seed_everything(seed)
    images = folder.ImageList(folder.scan(root), folder.transform(16, train=True))  # random crops
    net = models.EmbeddingNet(models.ConvTrunk(in_channels=3, widths=(4, 8)), embedding_dim=8)
    model = models.JointNet(net, num_classes=4)
    sampler = samplers.MPerClassSampler(images.labels, m=2, batch_size=4, length_before_new_iter=8)
    loader = torch.utils.data.DataLoader(images, 4, sampler=sampler, drop_last=True)
    optimizer = torch.optim.Adam(network.param_groups(model, net.trunk, 1e-3, 1e-3))
    return model, losses.CircleLoss(), miners.MultiSimilarityMiner(), optimizer, loader


def run(root, num_epochs, checkpoint, eval_fn=None):
    """(model, optimizer, history) of ``train.fit`` on a fresh setting, resuming from ``checkpoint``."""
    model, metric_loss, miner, optimizer, loader = setting(root)
    history = train.fit(model, metric_loss, miner, optimizer, loader, "cpu", num_epochs, checkpoint, seed=0,
                        eval_fn=eval_fn, progress=False)
    return model, optimizer, history


def adam_steps(optimizer):
    return {int(state["step"]) for state in optimizer.state.values()}


def test_a_rerun_resumes_from_the_checkpoint(tmp_path):
    root, checkpoint = write_folder(tmp_path / "images", classes=4, per_class=4), tmp_path / "ckpt.pt"
    after_one, optimizer, first = run(root, 1, checkpoint)
    assert [row["epoch"] for row in first] == [1] and adam_steps(optimizer) == {2}  # 2 batches an epoch
    reloaded, optimizer, again = run(root, 1, checkpoint)  # nothing left to train: just the checkpoint
    assert again == first and adam_steps(optimizer) == {2}
    assert all(torch.equal(v, after_one.state_dict()[k]) for k, v in reloaded.state_dict().items())
    _, optimizer, second = run(root, 2, checkpoint)
    assert [row["epoch"] for row in second] == [1, 2] and second[0] == first[0]
    assert adam_steps(optimizer) == {4}  # Adam's state went on from the checkpoint, not from scratch


def test_an_interrupted_run_keeps_its_last_finished_epoch(tmp_path):
    root, checkpoint = write_folder(tmp_path / "images", classes=4, per_class=4), tmp_path / "ckpt.pt"

    def interrupt_in_epoch_2(model, calls=[]):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return {}

    with pytest.raises(KeyboardInterrupt):
        run(root, 3, checkpoint, eval_fn=interrupt_in_epoch_2)
    assert [row["epoch"] for row in torch.load(checkpoint, weights_only=True)["history"]] == [1]
    _, _, history = run(root, 2, checkpoint)
    assert [row["epoch"] for row in history] == [1, 2]


def test_autocast_runs_the_forward_pass_in_bfloat16_and_the_loss_in_float32(tmp_path):
    """training.Autocast, as the command uses it on CUDA, here on the CPU (which has bfloat16 autocast too)."""
    root = write_folder(tmp_path / "images", classes=4, per_class=4)
    model, metric_loss, miner, optimizer, loader = setting(root)
    seen = {"forward": set(), "loss input": set()}
    model.embedding_net.embedder.register_forward_hook(lambda m, i, out: seen["forward"].add(out.dtype))
    watch = type("Watch", (training.Callback,), {
        "after_forward": lambda self, run: seen["loss input"].update(o.dtype for o in run.outputs)})()
    history = train.fit(model, metric_loss, miner, optimizer, loader, "cpu", 1, progress=False,
                        extra=[training.Autocast("cpu"), watch])
    assert seen == {"forward": {torch.bfloat16}, "loss input": {torch.float32}}
    assert torch.isfinite(torch.tensor(history[0]["loss"]))
    assert model.embedding_net.embedder(torch.zeros(1, 8)).dtype == torch.float32  # autocast left after the fit
