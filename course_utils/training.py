"""Training loops that take PML's objects as arguments: loss_fn, miner, optimizer (lesson 01)."""
import time

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm


def make_loader(dataset: Dataset, batch_size: int, seed: int, shuffle: bool = True, sampler=None) -> DataLoader:
    """A DataLoader whose shuffling is seeded, so a rerun sees the same batches."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None,
                      sampler=sampler, generator=generator, drop_last=True)


def compute_loss(model, loss_fn, miner, images, labels):
    """One forward pass; ``loss_fn(outputs, labels, indices_tuple)`` with the miner's tuples if a miner is given."""
    outputs = model(images)
    if miner is None:
        return loss_fn(outputs, labels)
    return loss_fn(outputs, labels, miner(outputs, labels))


def train_epoch(model, loss_fn, miner, optimizer, loader, device, progress: bool = True) -> float:
    """One pass over ``loader``; returns the mean training loss."""
    model.train()
    total, batches = 0.0, 0
    for images, labels in tqdm(loader, desc="batches", leave=False, disable=not progress):
        images, labels = images.to(device), labels.to(device)
        loss = compute_loss(model, loss_fn, miner, images, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total, batches = total + loss.item(), batches + 1
    return total / max(batches, 1)


def fit(model, loss_fn, miner, optimizer, loader, device, num_epochs: int, eval_fn=None,
        progress: bool = True) -> list:
    """Train for ``num_epochs``; returns one dict per epoch: epoch, loss, seconds and ``eval_fn(model)``'s metrics."""
    model.to(device)
    history = []
    epochs = tqdm(range(1, num_epochs + 1), desc="epochs", disable=not progress)
    for epoch in epochs:
        start = time.perf_counter()
        row = {"epoch": epoch, "loss": train_epoch(model, loss_fn, miner, optimizer, loader, device, progress)}
        row["seconds"] = time.perf_counter() - start
        if eval_fn is not None:
            row.update(eval_fn(model))
        history.append(row)
        epochs.set_postfix({k: round(v, 4) for k, v in row.items() if isinstance(v, float)})
    return history
