"""The ``train`` command on several processes (lesson 10, after lesson 09's ``course_utils.distributed``)::

    torchrun --nproc_per_node=N -m course_utils.own_images train FOLDER --out RUN_DIR ...

Each process (a GPU each with nccl, or the CPU with gloo) trains a DDP copy of the network on its share of each
step: ``RankClassSampler`` gives every process ``m`` images of each of *its own* classes, and PML's
``DistributedLossWrapper`` and ``DistributedMinerWrapper`` gather the embeddings of all processes, so the metric
loss sees every pair of the global batch. The checkpoint holds the unwrapped network, written by rank 0 only, so
a run resumes with another number of processes (``--batch-size`` counts all processes together)."""
import os

import numpy as np
import torch
import torch.distributed as dist
from pytorch_metric_learning.utils.distributed import DistributedLossWrapper, DistributedMinerWrapper
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Sampler

from .. import distributed, training
from ..session import pick_device
from . import train


def join(device_name: str = "auto") -> tuple:
    """(rank, world size, device) of this process: under torchrun, joined to the process group (GPU
    ``LOCAL_RANK`` or the CPU, as lesson 09's ``distributed.process_device``); otherwise (0, 1, the device)."""
    if "RANK" not in os.environ:
        return 0, 1, pick_device() if device_name == "auto" else torch.device(device_name)
    device = distributed.process_device("cuda" if device_name.startswith("cuda") else device_name)
    distributed.start(device)
    return dist.get_rank(), dist.get_world_size(), device


def leave() -> None:
    """Wait for every process, then leave the process group (nothing without torchrun)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def rank_and_size() -> tuple:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


class RankClassSampler(Sampler):
    """Batches for one process of ``world_size``: each step draws ``world_size * batch_size / m`` different
    classes (the same draw in every process, from the seeded global generator), and this process takes its own
    share of them, ``m`` images of each (drawn with replacement when a class has fewer)."""

    def __init__(self, labels, m: int, batch_size: int, length: int, rank: int, world_size: int):
        self.labels, self.m, self.batch_size, self.rank, self.world_size = torch.as_tensor(labels), m, batch_size, \
            rank, world_size
        self.by_class = [torch.nonzero(self.labels == c).flatten() for c in range(int(self.labels.max()) + 1)]
        self.steps = max(length // batch_size, 1)
        if world_size * batch_size // m > len(self.by_class):
            raise ValueError(f"{world_size} processes x {batch_size // m} classes a step need more than the "
                             f"{len(self.by_class)} classes: lower --batch-size or raise --m-per-class.")

    def __len__(self):
        return self.steps * self.batch_size

    def __iter__(self):
        per_rank = self.batch_size // self.m
        for _ in range(self.steps):
            classes = torch.randperm(len(self.by_class))[:per_rank * self.world_size]
            for c in classes[self.rank * per_rank:(self.rank + 1) * per_rank].tolist():
                images = self.by_class[c]
                picks = np.random.choice(len(images), self.m, replace=len(images) < self.m)
                yield from images[torch.as_tensor(picks)].tolist()


class RankCheckpoint(training.Checkpoint):
    """``training.Checkpoint`` of the unwrapped network (no ``module.`` prefix), written by rank 0 only: it resumes
    in any number of processes."""

    def before_fit(self, run):
        wrapped, run.model = run.model, unwrap(run.model)
        super().before_fit(run)
        run.model = wrapped

    def after_epoch(self, run):
        if rank_and_size()[0] == 0:
            training.save_checkpoint(self.path, unwrap(run.model), run.optimizer, run.history)


def unwrap(model):
    """The network inside a DDP wrapper (or the model itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def wrap(model, metric_loss, miner, device) -> tuple:
    """(DDP model, PML's distributed loss and miner) when running under torchrun; the same objects otherwise."""
    if not dist.is_initialized():
        return model, metric_loss, miner
    model = DistributedDataParallel(model.to(device), device_ids=[device.index] if device.type == "cuda" else None)
    return model, DistributedLossWrapper(metric_loss), DistributedMinerWrapper(miner)


def fit(model, metric_loss, miner, optimizer, loader, device, num_epochs: int, checkpoint, seed: int, weight: float,
        eval_fn=None, extra=(), keep_best=None) -> list:
    """``train.fit`` in one process or, under torchrun, on the DDP model with PML's wrapped loss and miner and a
    checkpoint of the unwrapped network. ``eval_fn`` gets the unwrapped model."""
    model, metric_loss, miner = wrap(model, metric_loss, miner, device)
    evaluate = eval_fn and (lambda wrapped: eval_fn(unwrap(wrapped)))
    return train.fit(model, metric_loss, miner, optimizer, loader, device, num_epochs, RankCheckpoint(checkpoint),
                     seed=seed, weight=weight, eval_fn=evaluate, extra=extra, keep_best=keep_best,
                     progress=rank_and_size()[0] == 0)
