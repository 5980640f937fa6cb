"""Embedding networks: a small CNN trunk, a linear embedder, a classifier head, and a ResNet trunk (lesson 01);
and the two layout tricks that make them fast on a CPU (``on_device``, ``for_inference``)."""
import copy

import torch
from torch import nn
from torch.fx.experimental.optimization import fuse


class ConvTrunk(nn.Module):
    """Three conv blocks and global average pooling: images (N, 1, 28, 28) -> features (N, 128)."""

    def __init__(self, in_channels: int = 1, widths=(32, 64, 128)):
        super().__init__()
        layers, channels = [], in_channels
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            channels = width
        self.layers = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_features = channels

    def forward(self, x):
        return self.layers(x)


NECKS = {"none": lambda dim: nn.Identity(), "batchnorm": nn.BatchNorm1d}


class EmbeddingNet(nn.Module):
    """A trunk followed by a linear layer: images -> embeddings (N, embedding_dim). ``neck="batchnorm"`` adds a
    ``BatchNorm1d`` after the linear layer (the "BNNeck" of Luo et al. 2019): each dimension is centred and scaled
    over the batch, so the embeddings cannot all point into one narrow cone (lesson 10)."""

    def __init__(self, trunk: nn.Module, embedding_dim: int = 64, neck: str = "none"):
        super().__init__()
        if neck not in NECKS:
            raise ValueError(f"neck must be one of {sorted(NECKS)}, not {neck!r}")
        self.trunk = trunk
        self.embedder = nn.Linear(trunk.out_features, embedding_dim)
        self.neck = NECKS[neck](embedding_dim)
        self.embedding_dim = embedding_dim

    def forward(self, x):
        return self.neck(self.embedder(self.trunk(x)))

    @property
    def neck_name(self) -> str:
        return "batchnorm" if isinstance(self.neck, nn.BatchNorm1d) else "none"


class CosineHead(nn.Module):
    """A classifier head on the embedding's direction only (NormFace, Wang et al. 2017): logits (N, num_classes) =
    ``scale`` * the cosine similarity of each embedding with each class's weight vector. Cross-entropy then pulls
    each class towards its own direction and away from the others', which spreads the embeddings over the sphere
    that retrieval by cosine sees; a linear head is as happy with every embedding in one narrow cone (lesson 10)."""

    def __init__(self, in_features: int, num_classes: int, scale: float = 16.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, in_features) / in_features ** 0.5)
        self.scale = scale

    def forward(self, x):
        return self.scale * nn.functional.normalize(x, dim=1) @ nn.functional.normalize(self.weight, dim=1).T


HEADS = {"linear": nn.Linear, "cosine": CosineHead}


class Classifier(nn.Module):
    """An embedding network with a classifier head on top: images -> logits (N, num_classes). The head is linear,
    or ``head="cosine"`` a ``CosineHead`` (lesson 10)."""

    def __init__(self, embedding_net: nn.Module, num_classes: int, head: str = "linear"):
        super().__init__()
        self.embedding_net = embedding_net
        if head not in HEADS:
            raise ValueError(f"head must be one of {sorted(HEADS)}, not {head!r}")
        self.head = HEADS[head](embedding_net.embedding_dim, num_classes)

    def forward(self, x):
        return self.head(self.embedding_net(x))


class JointNet(Classifier):
    """The classifier, returning its embeddings too: images -> (embeddings (N, D), logits (N, C)) in one pass: what
    joint training (lesson 07) and every later lesson train."""

    def forward(self, x):
        embeddings = self.embedding_net(x)
        return embeddings, self.head(embeddings)


class GreyToRGB(nn.Module):
    """Repeat a single grey channel three times, for trunks built for colour images (colour images pass as they
    are: expanding 3 channels to 3 changes nothing, and no branch on the shape keeps ``torch.fx`` able to trace it)."""

    def forward(self, x):
        return x.expand(-1, 3, -1, -1)


def resnet_trunk(pretrained: bool = False) -> nn.Module:
    """ResNet-18 with its final ``fc`` replaced by ``nn.Identity()``: images -> the 512 features fc would see.

    ``pretrained=True`` downloads ImageNet weights (internet needed); the default random
    weights work offline.
    """
    from torchvision.models import ResNet18_Weights, resnet18

    net = resnet18(weights=ResNet18_Weights.DEFAULT if pretrained else None)
    out_features = net.fc.in_features
    net.fc = nn.Identity()
    trunk = nn.Sequential(GreyToRGB(), net)
    trunk.out_features = out_features
    return trunk


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def on_device(model: nn.Module, device) -> nn.Module:
    """``model`` moved to ``device`` with its 4-D weights in channels-last order (N, H, W, C in memory), in place.

    Convolution kernels on CPUs (oneDNN) and GPUs (cuDNN) run fastest in that layout: one training epoch of the
    course's network took 1.4x less time on the course's 2-core machine (``benchmarks/``). The parameters stay
    the same objects, so an optimizer made before the move keeps working; a grey image (N, 1, H, W) is already
    channels-last, so the inputs need no conversion."""
    return model.to(device, memory_format=torch.channels_last)


def for_inference(model: nn.Module, device) -> nn.Module:
    """A copy of ``model`` for evaluation only, on ``device``: in eval mode, channels-last, and with each batch norm
    folded into the convolution before it. In eval mode a batch norm is a fixed affine map per channel, so the
    conv's weights and bias can absorb it: one layer fewer, the same outputs up to rounding (~1e-7).

    Models that ``torch.fx`` cannot trace (a branch on a tensor's value, say) keep their batch norms. ``model``
    itself is never modified."""
    inference = copy.deepcopy(model).eval()
    try:
        inference = fuse(inference)
    except Exception:  # torch.fx could not trace it: keep the batch norms
        pass
    return on_device(inference, device)
