"""The pipelines the benchmark compares, each ready to time: a ``Pipeline`` whose ``step()`` runs one unit of work
(one training epoch, one embedding of the test images) and returns its loss (or None).

- course:  ``data.make_loader`` over the in-memory TensorDataset + ``training.fit`` (one epoch per step), which
  trains the network in channels-last order (``models.on_device``); ``evaluation.embed``, which runs
  ``models.for_inference`` (batch norm folded into the convolutions, channels-last).
- usual:   what PML's example notebooks do: torchvision's ``FashionMNIST`` (PIL images, ``ToTensor`` and
  ``Normalize``, built offline from the course's IDX files) through a ``DataLoader`` with workers and PML's
  example training loop; embeddings with PML's ``testers.BaseTester().get_all_embeddings``.
- course_device: the whole data set on the device, batches sliced from it in make_loader's order, channels_last,
  autocast (``config.amp``), one sync per epoch; compiled with ``torch.compile`` on request.
- model_only: the course's training step (or forward pass) on one resident batch: the ceiling for its pipeline.
- loaders: each pipeline's loader alone, every batch moved to the device.
"""
import contextlib
import copy
import gzip
import io
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from course_utils import data, evaluation, models, training


@dataclass
class Pipeline:
    """``step()`` runs one epoch (or one pass) of ``images`` images and returns its loss, or None."""
    step: Callable[[], object]
    images: int
    info: dict = field(default_factory=dict)  # batch size, workers, amp, ...: copied into the pipeline's row


def new_model(seed: int) -> models.EmbeddingNet:
    """The course's network (``lesson.new_embedder``'s: ConvTrunk + Linear to 64), initialised from ``seed``."""
    torch.manual_seed(seed)
    return models.EmbeddingNet(models.ConvTrunk(), 64)


def model_flops(batch_size: int) -> dict:
    """FLOPs per image of the forward pass and of forward + backward (convolutions and matrix products; they grow
    linearly with the batch, so a small one counts them)."""
    from pytorch_metric_learning import losses
    from torch.utils.flop_counter import FlopCounterMode

    model, images = new_model(0), torch.randn(batch_size, 1, 28, 28)
    labels = torch.arange(batch_size) % 5
    with FlopCounterMode(display=False) as forward:
        model(images)
    with FlopCounterMode(display=False) as train:
        losses.ContrastiveLoss()(model(images), labels).backward()
    return {"forward_per_image": forward.get_total_flops() / batch_size,
            "train_per_image": train.get_total_flops() / batch_size}


def amp_dtype(amp: str):
    """The autocast dtype of ``--amp``: bf16 (no loss scaling needed), or None for full fp32."""
    return {"bf16": torch.bfloat16}.get(amp)


# ---------------------------------------------------------------- the data, two ways

def course_sets(train_images: int, test_images: int):
    """The course's in-memory TensorDatasets: the first images of the train and test splits, normalised."""
    train, test = (data.load_fashion_mnist(split) for split in ("train", "test"))
    return [torch.utils.data.TensorDataset(*(t[:n] for t in ds.tensors))
            for ds, n in ((train, train_images), (test, test_images))]


def usual_sets(train_images: int, test_images: int, workdir):
    """torchvision's ``FashionMNIST`` with ``ToTensor()`` and ``Normalize``, as tutorials build it, read offline
    from the course's IDX files (decompressed into ``workdir``) and cut to the same first images."""
    from torchvision import datasets, transforms

    raw = Path(workdir) / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for image_file, label_file in data.FILES.values():
        for name in (image_file, label_file):
            with gzip.open(data.default_root() / name) as src, open(raw / name.removesuffix(".gz"), "wb") as dst:
                shutil.copyfileobj(src, dst)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((data.MEAN,), (data.STD,))])
    sets = []
    for train, n in ((True, train_images), (False, test_images)):
        ds = datasets.FashionMNIST(str(workdir), train=train, transform=transform, download=False)
        ds.data, ds.targets = ds.data[:n], ds.targets[:n]
        sets.append(ds)
    return sets


def loader_batches(loader) -> torch.Tensor:
    """The index batches (num_batches, batch_size) that the next plain pass over ``loader`` (``data.make_loader``'s
    DataLoader) would draw, computed from its own sampler without fetching a single image: the usual pipeline's
    batches for the same seed."""
    torch.empty((), dtype=torch.int64).random_(generator=loader.generator)  # the draw each DataLoader pass makes
    return torch.tensor(list(loader.batch_sampler))


def usual_loader(dataset, batch_size: int, workers: int, seed: int) -> torch.utils.data.DataLoader:
    """The tutorials' training loader: shuffled, ``workers`` processes, incomplete last batch dropped."""
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                       generator=torch.Generator().manual_seed(seed), drop_last=True)


# ---------------------------------------------------------------- training

def usual_train_epoch(model, loss_func, mining_func, device, train_loader, optimizer) -> float:
    """PML's example notebooks' ``train`` (without their printing): one epoch; returns the last loss."""
    model.train()
    for data_, labels in train_loader:
        data_, labels = data_.to(device), labels.to(device)
        optimizer.zero_grad()
        embeddings = model(data_)
        indices_tuple = mining_func(embeddings, labels) if mining_func else None
        loss = loss_func(embeddings, labels, indices_tuple)
        loss.backward()
        optimizer.step()
    return loss.item()


def device_train_epoch(model, loss_fn, optimizer, images, labels, batches, amp=None) -> float:
    """One epoch over device-resident ``images`` (N, 1, 28, 28) and ``labels`` (N,) in the order ``batches``
    (B, batch) on their device; autocast to ``amp`` if given; one sync at the end. Returns the mean loss."""
    model.train()
    total = torch.zeros((), device=images.device)
    for batch in batches:
        with torch.autocast(images.device.type, dtype=amp, enabled=amp is not None):
            outputs = model(images[batch])
        loss = loss_fn(outputs.float(), labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach()
    return (total / len(batches)).item()


def course_training(model, train_set, config, device) -> Pipeline:
    """The course's pipeline: ``data.make_loader`` + ``training.fit`` for one epoch (PML's ContrastiveLoss, Adam);
    ``fit`` keeps the network in ``models.on_device``'s layout."""
    from pytorch_metric_learning import losses

    models.on_device(model, device)
    loader = data.make_loader(train_set, config.batch_size, seed=config.seed)
    optimizer, loss_fn = torch.optim.Adam(model.parameters(), lr=1e-3), losses.ContrastiveLoss()

    def step():
        return training.fit(model, loss_fn=loss_fn, miner=None, optimizer=optimizer, loader=loader, device=device,
                            num_epochs=1, progress=False)[-1]["loss"]

    return Pipeline(step, len(loader) * config.batch_size, {"batch_size": config.batch_size})


def usual_training(model, usual_train, config, device) -> Pipeline:
    """PML's example pipeline: shuffled DataLoader with workers over PIL images, PML's example loop."""
    from pytorch_metric_learning import losses

    model.to(device)
    loader = usual_loader(usual_train, config.batch_size, config.workers, config.seed)
    optimizer, loss_fn = torch.optim.Adam(model.parameters(), lr=1e-3), losses.ContrastiveLoss()
    return Pipeline(lambda: usual_train_epoch(model, loss_fn, None, device, loader, optimizer),
                    len(loader) * config.batch_size, {"batch_size": config.batch_size, "workers": config.workers})


def device_training(model, train_set, config, device, batch_size: int, compiled: bool = False,
                    channels_last: bool = True) -> Pipeline:
    """course_device: data on the device, make_loader's batches sliced from it, channels_last, autocast, fused
    Adam on a GPU; with ``compiled``, ``torch.compile(model)`` (the first step compiles)."""
    from pytorch_metric_learning import losses

    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    images, labels = (t.to(device) for t in train_set.tensors)
    loader = data.make_loader(train_set, batch_size, seed=config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=device.type == "cuda" or None)
    net = torch.compile(model, mode=config.compile_mode) if compiled else model
    loss_fn, amp = losses.ContrastiveLoss(), amp_dtype(config.amp)

    def step():  # the epoch's batch order is drawn as make_loader would (a few ms, inside the timing)
        return device_train_epoch(net, loss_fn, optimizer, images, labels, loader_batches(loader).to(device), amp)

    return Pipeline(step, len(loader) * batch_size,
                    {"batch_size": batch_size, "amp": config.amp, "channels_last": channels_last})


def model_only_training(model, config, device) -> Pipeline:
    """The course's training step alone (``models.on_device``'s layout) on one resident batch: the
    ceiling of the course's pipeline at this batch size."""
    from pytorch_metric_learning import losses

    models.on_device(model, device)
    optimizer, loss_fn = torch.optim.Adam(model.parameters(), lr=1e-3), losses.ContrastiveLoss()
    images = torch.randn(config.batch_size, 1, 28, 28, device=device)
    labels = torch.arange(config.batch_size, device=device) % 5

    def step():
        loss = loss_fn(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return Pipeline(step, config.batch_size, {"batch_size": config.batch_size})


def loader_pipeline(loader, device) -> Pipeline:
    """The data pipeline alone: one pass over ``loader``, each batch moved to ``device``."""
    def step():
        for batch, _ in loader:
            batch.to(device)

    return Pipeline(step, len(loader) * loader.batch_size, {"batch_size": loader.batch_size})


def loaders(sets, config, device) -> dict:
    """``{"course", "usual"}``: each pipeline's training loader alone."""
    return {"course": loader_pipeline(data.make_loader(sets["course"][0], config.batch_size, seed=config.seed),
                                      device),
            "usual": loader_pipeline(usual_loader(sets["usual"][0], config.batch_size, config.workers, config.seed),
                                     device)}


# ---------------------------------------------------------------- embedding

def course_embedding(model, test_set, device) -> Pipeline:
    """The course's ``evaluation.embed`` (batches of 512 from the in-memory set)."""
    model.to(device)

    def step():
        evaluation.embed(model, test_set, device)

    return Pipeline(step, len(test_set), {"batch_size": 512})


def usual_embedding(model, usual_test, config, device) -> Pipeline:
    """PML's examples' ``get_all_embeddings``: ``testers.BaseTester().get_all_embeddings(dataset, model)``."""
    from pytorch_metric_learning import testers

    model.to(device)
    tester = testers.BaseTester(batch_size=config.usual_embed_batch_size, dataloader_num_workers=config.workers,
                                data_device=device)

    def step():
        with contextlib.redirect_stderr(io.StringIO()):  # PML's tester draws a progress bar
            tester.get_all_embeddings(usual_test, model)

    return Pipeline(step, len(usual_test), {"batch_size": config.usual_embed_batch_size, "workers": config.workers})


@torch.inference_mode()
def device_embed(model, images, batch_size: int, amp=None) -> torch.Tensor:
    """Embeddings (N, D) of device-resident ``images`` in batches, under autocast to ``amp`` if given."""
    model.eval()
    with torch.autocast(images.device.type, dtype=amp, enabled=amp is not None):
        return torch.cat([model(batch).float() for batch in images.split(batch_size)])


def device_embedding(model, test_set, config, device, batch_size: int = 4096) -> Pipeline:
    """course_device: the test images on the device, ``models.for_inference``'s network, autocast, large batches,
    the embeddings copied back to the CPU."""
    model = models.for_inference(model, device)
    images = test_set.tensors[0].to(device)

    def step():
        device_embed(model, images, batch_size, amp_dtype(config.amp)).cpu()

    return Pipeline(step, len(images), {"batch_size": batch_size, "amp": config.amp, "channels_last": True})


def model_only_embedding(model, device, batch_size: int = 512) -> Pipeline:
    """``models.for_inference``'s forward pass alone on one resident batch of 512 (the course's batch): the ceiling
    of ``evaluation.embed``."""
    model = models.for_inference(model, device)
    images = torch.randn(batch_size, 1, 28, 28, device=device)

    @torch.inference_mode()
    def step():
        model(images)

    return Pipeline(step, batch_size, {"batch_size": batch_size})


def copies(model, n: int) -> list:
    """``n`` independent copies of ``model`` (every pipeline starts from the same weights)."""
    return [copy.deepcopy(model) for _ in range(n)]
