"""Embedding networks: a small CNN trunk, a linear embedder, a classifier head, and a ResNet trunk (lesson 01)."""
import torch
from torch import nn


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


class EmbeddingNet(nn.Module):
    """A trunk followed by a linear layer: images -> embeddings (N, embedding_dim)."""

    def __init__(self, trunk: nn.Module, embedding_dim: int = 64):
        super().__init__()
        self.trunk = trunk
        self.embedder = nn.Linear(trunk.out_features, embedding_dim)
        self.embedding_dim = embedding_dim

    def forward(self, x):
        return self.embedder(self.trunk(x))


class Classifier(nn.Module):
    """An embedding network with a linear classifier head on top: images -> logits (N, num_classes)."""

    def __init__(self, embedding_net: nn.Module, num_classes: int):
        super().__init__()
        self.embedding_net = embedding_net
        self.head = nn.Linear(embedding_net.embedding_dim, num_classes)

    def forward(self, x):
        return self.head(self.embedding_net(x))


class GreyToRGB(nn.Module):
    """Repeat a single grey channel three times, for trunks built for colour images."""

    def forward(self, x):
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


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
