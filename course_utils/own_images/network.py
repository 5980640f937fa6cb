"""The model of the method (lesson 10): a torchvision ResNet trunk with ``fc = Identity`` and a linear embedder
(2048 -> 128 for ResNet-50); ImageNet weights from the torch cache, a download or a local file; frozen batch
norm, a frozen trunk (linear probe) and separate learning rates for trunk and embedder."""
import copy
import os
import socket
import warnings
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tv
from torchvision.ops import FrozenBatchNorm2d

from .. import models

TRUNKS = {"resnet50": (tv.resnet50, tv.ResNet50_Weights.DEFAULT),
          "resnet18": (tv.resnet18, tv.ResNet18_Weights.DEFAULT)}  # ResNet-18: 512 features, for CPUs
NO_WEIGHTS = ("none", "random", None)


OFFLINE_ENV = "COURSE_OFFLINE"  # "1": never download weights (the course's tests and CI runs set it)


def downloads_allowed(environ=None) -> bool:
    """Whether a lesson may download ImageNet weights that are not in the torch cache: yes, unless the environment
    sets ``COURSE_OFFLINE=1``, as the course's tests and CI do (no data or weights downloads there)."""
    environ = os.environ if environ is None else environ
    return environ.get(OFFLINE_ENV, "").strip() != "1"


def cached_weights_path(weights: tv.WeightsEnum) -> Path:
    """Where torchvision keeps a downloaded weights file: ``torch.hub.get_dir()/checkpoints/<file of the URL>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def read_state_dict(path) -> dict:
    """A state dict saved with ``torch.save``; a clear FileNotFoundError if the file is not there."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"No weights file at {path}: pass weights='imagenet', 'none' or the path of a "
                                f"state dict saved with torch.save(model.state_dict(), path).")
    return torch.load(path, map_location="cpu", weights_only=True)


def download_state_dict(weights: tv.WeightsEnum, timeout: float = 30) -> dict:
    """torchvision's download into the torch cache, giving up after ``timeout`` seconds without an answer."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    finally:
        socket.setdefaulttimeout(previous)


def no_weights(arch: str, reason: str) -> tuple:
    """(None, the message that says why there are no ImageNet weights and how to get them)."""
    cached = cached_weights_path(TRUNKS[arch][1])
    message = (f"No ImageNet weights for {arch}: {reason}. Using RANDOM initialisation: everything runs, but "
               f"the 'pretrained' features are random. To use real weights, run once with internet access "
               f"(they are then cached), or download {TRUNKS[arch][1].url} to {cached}, or pass a local file.")
    return None, message


def pretrained_state(arch: str, weights="imagenet", download: bool = True) -> tuple:
    """(state dict or None, where it came from or why there is none: print it). ``weights``: "imagenet" (torch
    cache, else a download if ``download``), "none" (random initialisation) or the path of a local file."""
    if weights in NO_WEIGHTS:
        return None, "random initialisation (no weights asked for)"
    if str(weights) != "imagenet":
        return read_state_dict(weights), f"weights from {weights}"
    default = TRUNKS[arch][1]
    cached = cached_weights_path(default)
    if cached.is_file():
        return read_state_dict(cached), f"ImageNet weights {default} from the torch cache ({cached})"
    if not download:
        return no_weights(arch, f"{cached} is not there and downloading is off")
    try:
        return download_state_dict(default), f"ImageNet weights {default}, downloaded to {cached}"
    except (OSError, RuntimeError) as err:  # URLError is an OSError; a bad hash is a RuntimeError
        return no_weights(arch, f"{cached} is not there and the download failed ({err})")


def load_trunk_state(net: nn.Module, state: dict, arch: str) -> None:
    """Load a torchvision ResNet state dict into a trunk whose ``fc`` is Identity (the ``fc.*`` keys are dropped)."""
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"These weights do not fit a {arch} trunk (weights of another network?): "
                         f"{str(err)[:300]}") from None


def trunk(arch: str = "resnet50", weights="imagenet", download: bool = True) -> tuple:
    """(ResNet with ``fc = Identity``: images (N, 3, H, W) -> features (N, 2048 or 512), weights' origin).
    The trunk's ``pretrained`` attribute says whether weights were loaded."""
    if arch not in TRUNKS:
        raise ValueError(f"trunk must be one of {sorted(TRUNKS)}, not {arch!r}")
    net = TRUNKS[arch][0](weights=None)
    net.out_features = net.fc.in_features
    net.fc = nn.Identity()
    state, source = pretrained_state(arch, weights, download)
    if state is not None:
        load_trunk_state(net, state, arch)
    net.pretrained = state is not None
    return net, source


def embedding_model(arch: str = "resnet50", embedding_dim: int = 128, weights="imagenet", download: bool = True,
                    neck: str = "none") -> tuple:
    """(trunk + ``Linear(features, embedding_dim)`` (+ ``BatchNorm1d`` if ``neck="batchnorm"``): images (N, 3, H, W)
    -> (N, embedding_dim), weights' origin)."""
    net, source = trunk(arch, weights, download)
    return models.EmbeddingNet(net, embedding_dim, neck), source


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d by a FrozenBatchNorm2d with its statistics, so ``.train()`` cannot unfreeze it."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps).to(child.running_mean.device)
            frozen.load_state_dict(child.state_dict())
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module


def freeze_trunk(model: nn.Module) -> nn.Module:
    """The linear probe: the trunk (batch norm included) stays as it is; only the embedder learns."""
    freeze_batchnorm(model.trunk).requires_grad_(False)
    return model


def param_groups(model: nn.Module, trunk: nn.Module, trunk_lr: float, embedder_lr: float) -> list:
    """Optimizer parameter groups: the ``trunk`` at ``trunk_lr``, the rest of ``model`` (embedder, classifier
    head) at ``embedder_lr``. A frozen trunk contributes no group."""
    in_trunk = {id(p) for p in trunk.parameters()}
    trunk_params = [p for p in trunk.parameters() if p.requires_grad]
    rest = [p for p in model.parameters() if id(p) not in in_trunk and p.requires_grad]
    groups = [{"params": trunk_params, "lr": trunk_lr}] if trunk_params else []
    return groups + [{"params": rest, "lr": embedder_lr}]


def eval_resize(arch: str) -> float:
    """The evaluation resize of the trunk's ImageNet weights relative to their crop, from ``weights.transforms()``:
    232 / 224 for ResNet-50 (``ResNet50_Weights.DEFAULT`` is IMAGENET1K_V2), 256 / 224 for ResNet-18 (V1)."""
    preprocess = TRUNKS[arch][1].transforms()
    return preprocess.resize_size[0] / preprocess.crop_size[0]


def save_model(path, model: nn.Module, arch: str, size: int) -> None:
    """Save an embedding model with what it takes to rebuild it: arch, embedding size, input size."""
    torch.save({"arch": arch, "embedding_dim": model.embedding_dim, "neck": model.neck_name, "size": size,
                "state_dict": model.state_dict()}, path)


def load_model(path) -> tuple:
    """(the embedding model saved by ``save_model``, in eval mode with frozen batch norm, its input size)."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model, _ = embedding_model(saved["arch"], saved["embedding_dim"], weights=None, neck=saved.get("neck", "none"))
    freeze_batchnorm(model).load_state_dict(saved["state_dict"])  # frozen or not, the same at inference
    model.arch = saved["arch"]
    return model.eval(), saved["size"]


def export_torchscript(path, model: nn.Module, size: int) -> None:
    """Write the embedding network as TorchScript (``torch.jit.load(path)`` needs only PyTorch): a traced copy in
    eval mode taking normalised images (N, 3, size, size) on the CPU to embeddings (N, D)."""
    example = torch.zeros(1, 3, size, size)
    frozen = freeze_batchnorm(copy.deepcopy(model).cpu().eval())
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # PyTorch 2.9+ points to torch.export; TorchScript still loads
        traced = torch.jit.trace(frozen, example)
    traced.save(str(path))


@torch.no_grad()
def centre(model: nn.Module, embeddings) -> torch.Tensor:
    """Subtract the mean of ``embeddings`` (N, D), the model's own (of its training images), from every embedding
    it makes, by folding it into the bias of its last layer (the embedder's, or the batch-norm neck's): ``model.pt``
    and ``model.ts`` then carry it. Returns it (D,)."""
    mean = embeddings.float().mean(0)
    bias = model.neck.bias if model.neck_name == "batchnorm" else model.embedder.bias
    bias -= mean.to(bias.device)
    return mean
