"""Lesson 10's exercise check: ``freeze_batchnorm`` runs on a small network with nested batch norm, and the check
says what is wrong."""
import copy

import torch
from torch import nn

from .plumbing import call


def small_net(seed: int = 0) -> nn.Module:
    """Conv, batch norm and a nested block with another batch norm (eps 1e-3), all with made-up statistics."""
    gen = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4, eps=1e-3)))
    for bn in (net[1], net[3][1]):
        bn.running_mean.copy_(torch.randn(4, generator=gen))
        bn.running_var.copy_(torch.rand(4, generator=gen) * 0.01 + 0.001)  # small: eps matters
        bn.weight.data.copy_(torch.randn(4, generator=gen))
        bn.bias.data.copy_(torch.randn(4, generator=gen))
    return net


def _batchnorm_layers(module):
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def check_freeze_batchnorm(freeze_batchnorm) -> None:
    """Lesson 10: ``freeze_batchnorm(module)`` replaces every BatchNorm2d, nested ones too, by a frozen layer
    with the same statistics, which ``module.train()`` cannot unfreeze, and returns the module."""
    net, x = small_net(), torch.randn(8, 3, 9, 9, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = copy.deepcopy(net).eval()(x)
    frozen = call(freeze_batchnorm, net)
    assert isinstance(frozen, nn.Module), f"freeze_batchnorm should return the module, got {type(frozen).__name__}."
    left = _batchnorm_layers(frozen.train())  # what the training loop does every epoch
    assert len(left) != 1, "The nested block's BatchNorm2d was not replaced: recurse into the children."
    assert not left, ("The model still has BatchNorm2d layers: .eval() or requires_grad_(False) on them does not "
                      "survive model.train(), which switches them back to batch statistics. Replace each one.")
    with torch.no_grad():
        result = frozen(x)
    assert torch.allclose(result, expected, atol=1e-4), (
        "The frozen layers do not compute what the originals did in eval mode: copy weight, bias, running_mean "
        "and running_var (load_state_dict does it) and keep each layer's eps.")
    trainable = [name for name, p in frozen.named_parameters() if p.requires_grad]
    assert trainable == ["0.weight", "0.bias", "3.0.weight", "3.0.bias"], \
        f"Only the convolutions should still have trainable parameters, not: {trainable}."
    print("✓ freeze_batchnorm freezes every batch-norm layer, and model.train() leaves it frozen.")
