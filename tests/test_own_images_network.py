"""Lesson 10's model: ResNet trunk + embedder, weights from a file, the torch cache or nowhere; frozen parts."""
import urllib.error

import pytest
import torch
import torchvision
from torch import nn

from course_utils import models
from course_utils.own_images import network


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """An empty torch hub cache, and a download that fails as it does offline (tests never download)."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(weights, timeout=30):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(network, "download_state_dict", offline)
    return tmp_path / "hub"


def same_weights(net, state):
    return all(torch.equal(net.state_dict()[k], v) for k, v in state.items() if not k.startswith("fc."))


def test_resnet50_weights_load_from_a_local_file(tmp_path):
    state = torchvision.models.resnet50(weights=None).state_dict()  # random, as a stand-in for real weights
    torch.save(state, tmp_path / "resnet50.pth")
    model, source = network.embedding_model("resnet50", 128, weights=tmp_path / "resnet50.pth")
    assert same_weights(model.trunk, state) and model.trunk.pretrained and "resnet50.pth" in source
    assert isinstance(model.trunk.fc, nn.Identity)
    assert (model.embedder.in_features, model.embedder.out_features) == (2048, 128)
    with torch.no_grad():
        assert tuple(model.eval()(torch.randn(2, 3, 32, 32)).shape) == (2, 128)


def test_weights_of_another_network_are_refused(tmp_path):
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ValueError, match="do not fit a resnet50"):
        network.trunk("resnet50", weights=tmp_path / "r18.pth")


def test_a_missing_weights_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        network.trunk("resnet18", weights=tmp_path / "nothing.pth")


def test_unknown_trunk_is_refused():
    with pytest.raises(ValueError, match="resnet18"):
        network.trunk("vgg16", weights="none")


def test_imagenet_weights_come_from_the_torch_cache(empty_hub):
    state = torchvision.models.resnet18(weights=None).state_dict()
    cached = network.cached_weights_path(torchvision.models.ResNet18_Weights.DEFAULT)
    assert cached == empty_hub / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    torch.save(state, cached)
    net, source = network.trunk("resnet18", "imagenet")
    assert net.pretrained and same_weights(net, state) and "torch cache" in source


@pytest.mark.parametrize("download, reason", [(True, "download failed"), (False, "downloading is off")])
def test_offline_without_weights_means_random_init_and_a_clear_message(empty_hub, download, reason):
    net, source = network.trunk("resnet18", "imagenet", download=download)
    assert not net.pretrained and "RANDOM initialisation" in source
    assert reason in source and "resnet18-f37072fd.pth" in source


def test_frozen_batchnorm_computes_eval_mode_and_survives_train():
    net, _ = network.trunk("resnet18", weights="none")
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = net.eval()(x)
        network.freeze_batchnorm(net).train()
        assert torch.allclose(net(x), expected, atol=1e-5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())


def test_linear_probe_trains_only_the_embedder():
    model, _ = network.embedding_model("resnet18", 16, weights="none")
    network.freeze_trunk(model)
    assert {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad} == {"embedder"}
    before = {k: v.clone() for k, v in model.trunk.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()(torch.randn(4, 3, 32, 32)).sum().backward()
    optimizer.step()
    assert all(torch.equal(before[k], v) for k, v in model.trunk.state_dict().items())


def test_param_groups_give_trunk_and_embedder_their_own_learning_rates():
    net, _ = network.embedding_model("resnet18", 16, weights="none")
    model = models.JointNet(net, num_classes=3)
    groups = network.param_groups(model, net.trunk, trunk_lr=1e-4, embedder_lr=1e-3)
    assert [g["lr"] for g in groups] == [1e-4, 1e-3]
    assert len(groups[0]["params"]) == len(list(net.trunk.parameters()))
    assert groups[1]["params"] == [*net.embedder.parameters(), *model.head.parameters()]
    network.freeze_trunk(net)
    assert [g["lr"] for g in network.param_groups(model, net.trunk, 1e-4, 1e-3)] == [1e-3]


def model_with_neck(neck):
    """A ResNet-18 embedding model; a batch-norm neck gets running statistics of its own (not 0 and 1)."""
    model, _ = network.embedding_model("resnet18", 16, weights="none", neck=neck)
    if neck == "batchnorm":
        with torch.no_grad():
            model.train()(torch.randn(8, 3, 32, 32))
        assert model.neck.running_mean.abs().sum() > 0
    return model


@pytest.mark.parametrize("neck", ["none", "batchnorm"])
def test_saved_model_loads_back(tmp_path, neck):
    model = model_with_neck(neck)
    network.save_model(tmp_path / "model.pt", model, "resnet18", size=32)
    loaded, size = network.load_model(tmp_path / "model.pt")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert size == 32 and torch.allclose(loaded(x), model.eval()(x), atol=1e-5)
    assert loaded.neck_name == neck


@pytest.mark.parametrize("neck", ["none", "batchnorm"])
def test_centring_subtracts_the_mean_and_travels_with_the_saved_and_traced_model(tmp_path, neck):
    model = model_with_neck(neck)
    model.eval()
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        mean = network.centre(model, before)
        after = model(x)
    assert torch.allclose(mean, before.mean(0)) and torch.allclose(after, before - mean, atol=1e-5)
    assert torch.allclose(after.mean(0), torch.zeros(16), atol=1e-5)
    network.save_model(tmp_path / "model.pt", model, "resnet18", size=32)
    network.export_torchscript(tmp_path / "model.ts", model, 32)
    loaded, _ = network.load_model(tmp_path / "model.pt")
    with torch.no_grad():
        assert torch.allclose(loaded(x), after, atol=1e-5)
        assert torch.allclose(torch.jit.load(str(tmp_path / "model.ts"))(x), after, atol=1e-5)


def test_lessons_download_weights_unless_the_environment_says_offline():
    assert network.downloads_allowed({}) and network.downloads_allowed({"COURSE_OFFLINE": "0"})
    assert not network.downloads_allowed({"COURSE_OFFLINE": "1"})
