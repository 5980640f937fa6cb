"""Lesson 07's joint training (a ``models.JointNet``: one forward pass, ``weight * metric loss + cross-entropy``)
in an epoch loop that saves a checkpoint after every epoch and resumes from it (lesson 10)."""
import os
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import joint, models
from ..session import seed_everything


def batch_size_for(batch_size: int, m: int, num_classes: int) -> int:
    """The largest batch size <= ``batch_size`` that MPerClassSampler accepts: a multiple of m, at most
    m * num_classes."""
    size = min(batch_size, m * num_classes) // m * m
    if size < 2 * m:
        raise ValueError(f"A batch needs at least 2 classes with m={m} images each; got batch_size={batch_size} "
                         f"and {num_classes} classes.")
    return size


def save_checkpoint(path, model, optimizer, history) -> None:
    """Write model (classifier head included), optimizer and history; atomically, so that an interruption
    leaves the previous checkpoint intact."""
    path = Path(path)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "history": history}
    torch.save(state, path.with_suffix(".tmp"))
    os.replace(path.with_suffix(".tmp"), path)


def resume(path, model, optimizer) -> list:
    """Load the checkpoint at ``path`` into model and optimizer if there is one; its history ([] if none)."""
    if path is None or not Path(path).is_file():
        return []
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return state["history"]


def fit(model, metric_loss, miner, optimizer, loader, device, num_epochs: int, checkpoint=None, seed: int = 0,
        weight: float = 0.1, eval_fn=None, progress: bool = True) -> list:
    """``joint.fit`` that resumes: epochs already in ``checkpoint`` are skipped, and after every epoch the
    checkpoint is rewritten. Each epoch is seeded (``seed + epoch``), so reruns of a command agree."""
    models.on_device(model, device)
    history = resume(checkpoint, model, optimizer)
    if history and progress:
        print(f"Resuming after epoch {len(history)} from {checkpoint}")
    epochs = range(len(history) + 1, num_epochs + 1)
    for epoch in tqdm(epochs, desc="epochs", initial=len(history), total=num_epochs, disable=not progress):
        seed_everything(seed + epoch)  # MPerClassSampler draws from NumPy, the random crops from torch
        start = time.perf_counter()
        loss = joint.train_epoch(model, metric_loss, miner, optimizer, loader, device, weight=weight, progress=progress)
        row = {"epoch": epoch, "loss": loss, "seconds": time.perf_counter() - start}
        if eval_fn is not None:
            row.update(eval_fn(model))
        history.append(row)
        if checkpoint is not None:
            save_checkpoint(checkpoint, model, optimizer, history)
    return history
