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


def test_cosine_head_is_scale_times_the_cosine_with_each_class_weight():
    head = models.CosineHead(6, 4, scale=16.0)
    x = torch.randn(5, 6)
    naive = torch.tensor([[16.0 * torch.dot(e, w).item() / (e.norm() * w.norm()).item() for w in head.weight]
                          for e in x])
    assert torch.allclose(head(x), naive, atol=1e-5)
    assert torch.allclose(head(3.0 * x), head(x), atol=1e-5)  # only the direction of an embedding counts
    clf = models.JointNet(models.EmbeddingNet(models.ConvTrunk(widths=(4, 8)), 6), 4, head="cosine").eval()
    embeddings, logits = clf(torch.randn(2, 1, 28, 28))
    assert torch.allclose(logits, clf.head(embeddings)) and logits.abs().max() <= 16.0 + 1e-4


def test_classifier_refuses_an_unknown_head():
    import pytest
    with pytest.raises(ValueError, match="head must be one of"):
        models.Classifier(models.EmbeddingNet(models.ConvTrunk(), 6), 4, head="arcface")


def test_resnet_trunk_is_the_layer_before_fc():
    trunk = models.resnet_trunk()
    trunk.eval()
    features = trunk(torch.randn(2, 1, 28, 28))
    assert features.shape == (2, 512) == (2, trunk.out_features)
    assert isinstance(trunk[1].fc, torch.nn.Identity)


def test_count_parameters():
    assert models.count_parameters(torch.nn.Linear(3, 2)) == 8


def _trained_batch_norm(net):
    """Give every batch norm statistics and an affine map that are not the identity, as training would."""
    generator = torch.Generator().manual_seed(0)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            for tensor in (module.running_mean, module.weight, module.bias):
                tensor.data.normal_(0, 0.5, generator=generator)
            module.running_var.data.uniform_(0.5, 2.0, generator=generator)
    return net


def test_for_inference_gives_the_same_embeddings_without_batch_norm():
    net = _trained_batch_norm(models.EmbeddingNet(models.ConvTrunk(), 16)).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fast = models.for_inference(net, "cpu")
    images = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(fast(images), net.eval()(images), atol=1e-5)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())  # folded into the convs
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in fast.parameters() if p.dim() == 4)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the original is untouched


def test_for_inference_keeps_batch_norm_where_fx_cannot_trace():
    class Branchy(torch.nn.Module):  # a branch on a tensor's value: torch.fx cannot trace it
        def __init__(self):
            super().__init__()
            self.net = _trained_batch_norm(models.EmbeddingNet(models.ConvTrunk(), 16))

        def forward(self, x):
            return self.net(x) if x.sum() > 0 else -self.net(x)

    net = Branchy().eval()
    fast = models.for_inference(net, "cpu")
    images = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(fast(images), net(images), atol=1e-5)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules()) and fast is not net


def test_resnet_trunk_folds_its_batch_norms_for_grey_and_colour_images():
    trunk = _trained_batch_norm(models.resnet_trunk()).eval()
    fast = models.for_inference(trunk, "cpu")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    with torch.no_grad():
        for channels in (1, 3):
            images = torch.randn(2, channels, 32, 32)
            assert torch.allclose(fast(images), trunk(images), atol=1e-4, rtol=1e-4)


def test_on_device_keeps_the_parameters_an_optimizer_holds():
    torch.manual_seed(0)
    net = models.EmbeddingNet(models.ConvTrunk(), 16)
    plain = models.EmbeddingNet(models.ConvTrunk(), 16)
    plain.load_state_dict(net.state_dict())
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    params = list(net.parameters())
    assert models.on_device(net, "cpu") is net and list(net.parameters()) == params
    assert net.trunk.layers[0].weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.randn(8, 1, 28, 28)
    net(images).square().mean().backward()
    optimizer.step()  # the step reaches the moved weights ...
    plain_optimizer = torch.optim.SGD(plain.parameters(), lr=0.1)
    plain(images).square().mean().backward()
    plain_optimizer.step()  # ... and agrees with the same step in the default layout, up to rounding
    for (name, a), b in zip(net.named_parameters(), plain.parameters()):
        assert torch.allclose(a, b, atol=1e-5), name
