import torch

from course_utils import models


def test_embedding_net_shapes():
    net = models.EmbeddingNet(models.ConvTrunk(), embedding_dim=16)
    assert net(torch.randn(4, 1, 28, 28)).shape == (4, 16)
    assert net.trunk(torch.randn(4, 1, 28, 28)).shape == (4, net.trunk.out_features)


def test_classifier_head_on_embeddings():
    net = models.EmbeddingNet(models.ConvTrunk(widths=(4, 8)), embedding_dim=6)
    clf = models.Classifier(net, num_classes=5)
    x = torch.randn(3, 1, 28, 28)
    clf.eval()
    assert clf(x).shape == (3, 5)
    assert torch.allclose(clf(x), clf.head(net(x)))


def test_resnet_trunk_is_the_layer_before_fc():
    trunk = models.resnet_trunk()
    trunk.eval()
    features = trunk(torch.randn(2, 1, 28, 28))
    assert features.shape == (2, 512) == (2, trunk.out_features)
    assert isinstance(trunk[1].fc, torch.nn.Identity)


def test_count_parameters():
    assert models.count_parameters(torch.nn.Linear(3, 2)) == 8
