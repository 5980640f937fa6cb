"""Training loops that take PML's objects as arguments: loss_fn, miner, optimizer (lesson 01)."""
import time

import torch
from tqdm.auto import tqdm

from . import models


def loss_of_outputs(loss_fn, miner, outputs, labels):
    """``loss_fn(outputs, labels, indices_tuple)`` with the miner's tuples if a miner is given, else without."""
    if miner is None:
        return loss_fn(outputs, labels)
    return loss_fn(outputs, labels, miner(outputs, labels))


def compute_loss(model, loss_fn, miner, images, labels):
    """One forward pass, then ``loss_of_outputs``."""
    return loss_of_outputs(loss_fn, miner, model(images), labels)


def train_epoch(model, loss_fn, miner, optimizer, loader, device, progress: bool = True, on_batch=None) -> float:
    """One pass over ``loader``; returns the mean training loss. ``on_batch(outputs, labels)``, if given, sees each
    batch's detached outputs before the step (to count mined pairs, say: lesson 05)."""
    model.train()
    total, batches = 0.0, 0
    for images, labels in tqdm(loader, desc="batches", leave=False, disable=not progress):
        images, labels = images.to(device), labels.to(device)
        outputs = model(images)
        if on_batch is not None:
            on_batch(outputs.detach(), labels)
        loss = loss_of_outputs(loss_fn, miner, outputs, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total, batches = total + loss.item(), batches + 1
    return total / max(batches, 1)


def fit(model, loss_fn, miner, optimizer, loader, device, num_epochs: int, eval_fn=None,
        progress: bool = True, on_batch=None) -> list:
    """Train for ``num_epochs``; returns one dict per epoch: epoch, loss, seconds and ``eval_fn(model)``'s metrics."""
    models.on_device(model, device)  # channels-last weights: faster convolutions, same parameters
    history = []
    epochs = tqdm(range(1, num_epochs + 1), desc="epochs", disable=not progress)
    for epoch in epochs:
        start = time.perf_counter()
        row = {"epoch": epoch, "loss": train_epoch(model, loss_fn, miner, optimizer, loader, device, progress, on_batch)}
        row["seconds"] = time.perf_counter() - start
        if eval_fn is not None:
            row.update(eval_fn(model))
        history.append(row)
        epochs.set_postfix({k: round(v, 4) for k, v in row.items() if isinstance(v, float)})
    return history
