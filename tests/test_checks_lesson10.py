"""Lesson 10's exercise check passes a right answer and rejects the typical wrong ones with a helpful message."""
import pytest
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from course_utils.checks import lesson10
from course_utils.own_images import network


def only_eval(module):
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    return module


def only_requires_grad(module):
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.requires_grad_(False)
    return module


def top_level_only(module):
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.load_state_dict(child.state_dict())
            setattr(module, name, frozen)
    return module


def statistics_not_copied(module):
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, FrozenBatchNorm2d(child.num_features, eps=child.eps))
        else:
            statistics_not_copied(child)
    return module


def eps_forgotten(module):
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features)
            frozen.load_state_dict(child.state_dict())
            setattr(module, name, frozen)
        else:
            eps_forgotten(child)
    return module


def no_return(module):
    network.freeze_batchnorm(module)


def stub(module):
    raise NotImplementedError()


def test_check_accepts_the_course_function(capsys):
    lesson10.check_freeze_batchnorm(network.freeze_batchnorm)
    assert "✓" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, message", [
    (stub, "not implemented"),
    (only_eval, "does not survive model.train"),
    (only_requires_grad, "does not survive model.train"),
    (top_level_only, "nested block"),
    (statistics_not_copied, "copy weight, bias"),
    (eps_forgotten, "eps"),
    (no_return, "should return the module"),
])
def test_check_rejects(wrong, message):
    with pytest.raises(AssertionError, match=message):
        lesson10.check_freeze_batchnorm(wrong)
