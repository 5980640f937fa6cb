"""Lesson 07's exercise check: ``joint_training_step`` makes the same step as ``joint.joint_step`` on a small
fixed network, and the typical mistake is named when it does not."""
import copy
import math

import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses, miners
from torch import nn

from .. import joint, models
from .plumbing import call


class _TinyTrunk(nn.Module):
    """A trunk for the check: features (N, 12) -> (N, 16) through a linear layer, batch norm and ReLU."""

    out_features = 16

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(12, 16), nn.BatchNorm1d(16), nn.ReLU())

    def forward(self, x):
        return self.layers(x)


def _check_setup(seed: int):
    """A fixed float64 ``JointNet`` (4 classes, embedding size 8) and a batch of 16 samples around 4 class centres
    (close enough for the miner to drop some pairs, so that a step without it differs)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = models.JointNet(models.EmbeddingNet(_TinyTrunk(), 8), 4).double()
    images = torch.randn(16, 12, generator=gen, dtype=torch.float64)
    labels = torch.arange(16)[torch.randperm(16, generator=gen)] % 4
    centres = torch.randn(4, 12, generator=gen, dtype=torch.float64)
    return model, images + 1.5 * centres[labels], labels


def _copy_with_stale_gradients(model, seed: int):
    """A copy of ``model`` whose parameters hold gradients left over from a "previous step" (the same per seed)."""
    copied, gen = copy.deepcopy(model), torch.Generator().manual_seed(seed + 100)
    for p in copied.parameters():
        p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
    return copied


def _mistakes(metric_loss, miner, weight):
    """``{description: step}``: reference steps that make one typical mistake each."""
    def step(loss_of):
        def run(model, optimizer, images, labels):
            embeddings, logits = model(images)
            optimizer.zero_grad(set_to_none=True)
            loss_of(embeddings, logits, labels).backward()
            optimizer.step()
        return run

    def no_zero_grad(model, optimizer, images, labels):
        embeddings, logits = model(images)
        joint.joint_loss(embeddings, logits, labels, metric_loss, miner, weight).backward()
        optimizer.step()

    metric = lambda e, y: metric_loss(e, y, miner(e, y))
    return {
        "the metric loss is computed on the logits instead of the embeddings":
            step(lambda e, z, y: weight * metric(z, y) + F.cross_entropy(z, y)),
        "the weight multiplies the cross-entropy instead of the metric loss (weight * metric + cross-entropy)":
            step(lambda e, z, y: metric(e, y) + weight * F.cross_entropy(z, y)),
        "the weight is not applied at all (metric + cross-entropy)":
            step(lambda e, z, y: metric(e, y) + F.cross_entropy(z, y)),
        "the miner's pairs are not passed to the metric loss: use "
        "metric_loss(embeddings, labels, miner(embeddings, labels))":
            step(lambda e, z, y: weight * metric_loss(e, y) + F.cross_entropy(z, y)),
        "the cross-entropy is computed on the embeddings instead of the logits":
            step(lambda e, z, y: weight * metric(e, y) + F.cross_entropy(e, y)),
        "the old gradients are not cleared (optimizer.zero_grad() before loss.backward())": no_zero_grad,
    }


def _same_parameters(a, b) -> bool:
    return all(torch.allclose(x, y, rtol=1e-6, atol=1e-9) for x, y in zip(a.parameters(), b.parameters()))


def _count_forward_passes(model) -> list:
    """A list that grows by one each time ``model.embedding_net`` runs (a forward hook)."""
    calls = []
    model.embedding_net.register_forward_hook(lambda *args: calls.append(1))
    return calls


def check_joint_step(joint_training_step, metric_loss=None, miner=None) -> None:
    """Lesson 07: ``joint_training_step(model, metric_loss, miner, optimizer, images, labels, weight)`` makes the
    same step as ``joint.joint_step`` (parameters and batch-norm statistics after one step, and the loss it returns),
    on a fixed model, for several weights; names the typical mistake if it doesn't."""
    metric_loss = metric_loss or losses.CircleLoss(m=0.4, gamma=80)
    miner = miner or miners.MultiSimilarityMiner(epsilon=0.1)
    for seed, weight in ((0, 0.1), (1, 2.5), (2, 0.01)):
        model, images, labels = _check_setup(seed)
        reference, student = (_copy_with_stale_gradients(model, seed) for _ in range(2))
        expected = joint.joint_step(reference, metric_loss, miner, torch.optim.SGD(reference.parameters(), lr=0.01),
                              images, labels, weight)
        calls = _count_forward_passes(student)
        result = call(joint_training_step, student, metric_loss, miner, torch.optim.SGD(student.parameters(), lr=0.01),
                      images, labels, weight, forbid=[(joint, "joint_step"), (joint, "joint_loss")])
        assert calls, "The model never ran: take the embeddings and the logits from `model(images)`."
        assert len(calls) == 1, (
            f"The model ran {len(calls)} times on one batch: two forward passes. Take the embeddings and the logits "
            f"from ONE call, `embeddings, logits = model(images)`: a second pass costs as much again and, in training "
            f"mode, updates the batch-norm statistics twice.")
        if _same_parameters(student, model):
            raise AssertionError("The parameters did not change: call loss.backward() and then optimizer.step().")
        if not _same_parameters(student, reference):
            for mistake, wrong_step in _mistakes(metric_loss, miner, weight).items():
                other = _copy_with_stale_gradients(model, seed)
                wrong_step(other, torch.optim.SGD(other.parameters(), lr=0.01), images, labels)
                if _same_parameters(student, other):
                    raise AssertionError(f"With weight={weight}, the parameters after your step are exactly those "
                                         f"of a step where {mistake}.")
            raise AssertionError(
                f"With weight={weight}, the parameters after your step differ from the reference step "
                f"`loss = weight * metric_loss(embeddings, labels, miner(embeddings, labels)) + "
                f"cross_entropy(logits, labels)`, one zero_grad, one backward, one optimizer.step().")
        assert all(torch.equal(x, y) for x, y in zip(student.buffers(), reference.buffers())), \
            "The batch-norm statistics differ from the reference step's: run the model once, in training mode."
        assert isinstance(result, (float, int)) or (torch.is_tensor(result) and result.numel() == 1), \
            f"Return the loss as a number (`loss.item()`), not {type(result).__name__}."
        value = float(result.detach()) if torch.is_tensor(result) else float(result)
        assert math.isclose(value, expected, rel_tol=1e-6), \
            f"The step is right, but it returned {value:.6f} instead of the loss {expected:.6f}."
    print("✓ joint_training_step makes the same step as the reference (one forward pass, two losses, one backward, "
          "one optimiser step).")
