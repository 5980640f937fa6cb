"""Lesson 07's exercise check accepts a right step and names each typical mistake."""
import pytest
import torch.nn.functional as F
from reference_copies import copy_of

from course_utils import joint
from course_utils.checks import lesson07


def step(model, metric_loss, miner, optimizer, images, labels, weight=0.1, *, on="embeddings", swap=False,
         no_weight=False, passes=1, zero_grad=True, use_miner=True, ce_on="logits", update=True, result="float"):
    """A joint step that makes the mistakes it is told to make (by default none)."""
    embeddings, logits = model(images)
    for _ in range(passes - 1):
        embeddings = model(images)[0]
    x = logits if on == "logits" else embeddings
    metric = metric_loss(x, labels, miner(x, labels)) if use_miner else metric_loss(x, labels)
    ce = F.cross_entropy(embeddings if ce_on == "embeddings" else logits, labels)
    loss = metric + ce if no_weight else (metric + weight * ce if swap else weight * metric + ce)
    if zero_grad:
        optimizer.zero_grad()
    loss.backward()
    if update:
        optimizer.step()
    return {"float": loss.item(), "tensor": loss, "none": None}[result]


def test_a_right_step_passes(capsys):
    lesson07.check_joint_step(step)
    lesson07.check_joint_step(lambda *args: step(*args, result="tensor"))
    assert capsys.readouterr().out.count("✓") == 2


def test_the_reference_step_passes(capsys):
    """A copy of ``joint.joint_step`` whose loss is a copy of ``joint.joint_loss`` (the check refuses the originals)."""
    loss = copy_of(joint.joint_loss)
    reference = copy_of(joint.joint_step, JointLoss=lambda *settings: lambda out, labels: loss(*out, labels, *settings))
    lesson07.check_joint_step(reference)
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("mistake, message", [
    (dict(on="logits"), "metric loss is computed on the logits instead of the embeddings"),
    (dict(swap=True), "weight multiplies the cross-entropy instead of the metric loss"),
    (dict(no_weight=True), "weight is not applied at all"),
    (dict(passes=2), "two forward passes"),
    (dict(zero_grad=False), "old gradients are not cleared"),
    (dict(use_miner=False), "miner's pairs are not passed to the metric loss"),
    (dict(ce_on="embeddings"), "cross-entropy is computed on the embeddings instead of the logits"),
    (dict(update=False), "parameters did not change"),
    (dict(result="none"), "Return the loss as a number"),
], ids=["metric on logits", "weight on the wrong term", "no weight", "two forward passes", "no zero_grad",
        "no miner", "cross-entropy on embeddings", "no optimizer step", "returns nothing"])
def test_the_step_check_names_each_mistake(mistake, message):
    with pytest.raises(AssertionError, match=message):
        lesson07.check_joint_step(lambda *args: step(*args, **mistake))


def test_the_step_check_says_when_nothing_is_implemented():
    def joint_training_step(*args):
        raise NotImplementedError()

    with pytest.raises(AssertionError, match="not implemented yet"):
        lesson07.check_joint_step(joint_training_step)


def test_a_model_that_never_runs_is_named():
    with pytest.raises(AssertionError, match="never ran"):
        lesson07.check_joint_step(lambda *args: 0.0)
