"""The course's one training loop (lesson 01; lesson 02 writes it out by hand and compares).

``fit`` is the loop of PML's example notebooks, once per epoch::

    for images, labels in loader:
        embeddings = model(images)
        indices_tuple = miner(embeddings, labels)           # only with a miner (lesson 05)
        loss = loss_fn(embeddings, labels, indices_tuple)
        optimizer.zero_grad(); loss.backward(); optimizer.step()

Every lesson and command trains through it. What differs between them is passed in, not written again:
the loss (a PML loss, ``nn.CrossEntropyLoss``, or lesson 07's ``joint.JointLoss`` on (embeddings, logits)),
and callbacks for everything around the step (as in fastai's ``Learner``): tracking metrics after each
epoch, keeping the best epoch's weights, a learning-rate schedule, checkpoints that resume, reseeding or
reshuffling each epoch (DDP), and watching each batch.
"""
import os
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from . import models, session


class Callback:
    """Hooks ``fit`` calls, in the order the callbacks are given, with the ``Run`` in progress: ``before_fit``,
    ``before_epoch``, ``after_forward`` (outputs computed, no step yet), ``after_step``, ``after_epoch`` (the
    epoch's row is written and may be added to), ``after_fit``. Each does nothing unless overridden."""

    def before_fit(self, run): ...
    def before_epoch(self, run): ...
    def after_forward(self, run): ...
    def after_step(self, run): ...
    def after_epoch(self, run): ...
    def after_fit(self, run): ...


class Run:
    """What one ``fit`` call works on, visible to its callbacks: the model, loss, miner, optimizer, loader and
    device; the epoch (1, 2, ...), this batch's ``outputs``, ``labels`` and ``loss``, the epoch's ``row`` and
    the ``history`` of rows (a callback that resumes fills it before the first epoch)."""

    def __init__(self, model, loss_fn, optimizer, loader, device, miner=None, callbacks=()):
        self.model, self.loss_fn, self.miner, self.optimizer = model, loss_fn, miner, optimizer
        self.loader, self.device, self.callbacks = loader, device, list(callbacks)
        self.epoch, self.history, self.row = 0, [], {}
        self.outputs = self.labels = self.loss = None

    def call(self, hook: str) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self)


def loss_of_outputs(loss_fn, miner, outputs, labels):
    """``loss_fn(outputs, labels, miner(outputs, labels))`` with a miner, ``loss_fn(outputs, labels)`` without."""
    if miner is None:
        return loss_fn(outputs, labels)
    return loss_fn(outputs, labels, miner(outputs, labels))


def train_epoch(run: Run, progress: bool = True) -> float:
    """One pass over ``run.loader``: forward, loss, backward, step for each batch; returns the mean loss."""
    run.model.train()
    total, batches = 0.0, 0
    with tqdm(total=len(run.loader), desc="batches", leave=False, disable=not progress) as bar:
        for images, labels in run.loader:  # the loader itself, so the batches are the plain loop's batches
            images, labels = images.to(run.device), labels.to(run.device)
            run.outputs, run.labels = run.model(images), labels
            run.call("after_forward")
            run.loss = loss_of_outputs(run.loss_fn, run.miner, run.outputs, labels)
            run.optimizer.zero_grad(set_to_none=True)
            run.loss.backward()
            run.optimizer.step()
            run.call("after_step")
            total, batches = total + run.loss.item(), batches + 1
            bar.update()
    return total / max(batches, 1)


def fit(model, loss_fn, optimizer, loader, device, num_epochs: int, miner=None, callbacks=(),
        progress: bool = True) -> list:
    """Train ``model`` for ``num_epochs`` (epochs a callback resumed from are skipped); returns the history, one
    dict per epoch: ``epoch``, mean training ``loss``, ``seconds`` and whatever the callbacks add (``Track``).

    The model is first moved to ``device`` in channels-last order (``models.on_device``), except a DDP model,
    whose gradient buckets were laid out when it was wrapped."""
    if not isinstance(model, DistributedDataParallel):
        models.on_device(model, device)
    run = Run(model, loss_fn, optimizer, loader, device, miner, callbacks)
    run.call("before_fit")
    with tqdm(total=num_epochs, initial=len(run.history), desc="epochs", disable=not progress) as bar:
        for run.epoch in range(len(run.history) + 1, num_epochs + 1):
            run.call("before_epoch")
            start = time.perf_counter()
            run.row = {"epoch": run.epoch, "loss": train_epoch(run, progress)}
            run.row["seconds"] = time.perf_counter() - start
            run.history.append(run.row)
            run.call("after_epoch")
            bar.set_postfix({k: round(v, 4) for k, v in run.row.items() if isinstance(v, float)})
            bar.update()
    run.call("after_fit")
    return run.history


# --- callbacks ---------------------------------------------------------------------------------------------

class Track(Callback):
    """After each epoch, add ``metrics(model)`` (a dict, e.g. ``{"valid map_r": ...}``) to the epoch's row."""

    def __init__(self, metrics):
        self.metrics = metrics

    def after_epoch(self, run):
        run.row.update(self.metrics(run.model))


class BestEpoch(Callback):
    """Model selection: keep a copy of the weights of the epoch with the highest ``select_on`` (a key that a
    ``Track`` before it writes), load them after the last epoch, and mark that epoch ``selected`` in the history."""

    def __init__(self, select_on: str):
        self.select_on, self.best, self.state = select_on, None, None

    def after_epoch(self, run):
        if self.best is None or run.row[self.select_on] > self.best:
            self.best = run.row[self.select_on]
            self.state = {k: v.detach().clone() for k, v in run.model.state_dict().items()}

    def after_fit(self, run):
        if self.state is not None:
            run.model.load_state_dict(self.state)
            for row in run.history:
                row["selected"] = row[self.select_on] == self.best


class Schedule(Callback):
    """Step a learning-rate scheduler after every optimiser step (``OneCycleLR``, lesson 08)."""

    def __init__(self, scheduler):
        self.scheduler = scheduler

    def after_step(self, run):
        self.scheduler.step()


class WatchBatches(Callback):
    """Call ``watch(outputs, labels)`` on each batch's detached outputs before the step (lessons 02 and 05 count
    pairs and mined tuples this way)."""

    def __init__(self, watch):
        self.watch = watch

    def after_forward(self, run):
        self.watch(run.outputs.detach(), run.labels)


class SeedEachEpoch(Callback):
    """Seed every generator with ``seed + epoch`` before each epoch, so an epoch after a resume draws what it
    drew in an uninterrupted run (lesson 10: MPerClassSampler draws from NumPy, random crops from torch)."""

    def __init__(self, seed: int):
        self.seed = seed

    def before_epoch(self, run):
        session.seed_everything(self.seed + run.epoch)


class ShuffleEachEpoch(Callback):
    """``loader.sampler.set_epoch(epoch)`` before each epoch: a new order each epoch, the same in every process
    (a ``DistributedSampler``, lesson 09)."""

    def before_epoch(self, run):
        run.loader.sampler.set_epoch(run.epoch)


class Checkpoint(Callback):
    """Save model, optimizer and history to ``path`` after every epoch (atomically: an interruption leaves the
    previous checkpoint whole), and resume from it before the first epoch if it exists (lesson 10)."""

    def __init__(self, path, verbose: bool = True):
        self.path, self.verbose = path, verbose

    def before_fit(self, run):
        if Path(self.path).is_file():
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            run.model.load_state_dict(state["model"])
            run.optimizer.load_state_dict(state["optimizer"])
            run.history = state["history"]
            if self.verbose:
                print(f"Resuming after epoch {len(run.history)} from {self.path}")

    def after_epoch(self, run):
        save_checkpoint(self.path, run.model, run.optimizer, run.history)


def save_checkpoint(path, model, optimizer, history) -> None:
    """Write model, optimizer and history; to a temporary file first, then renamed over ``path``."""
    path = Path(path)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "history": history}
    torch.save(state, path.with_suffix(".tmp"))
    os.replace(path.with_suffix(".tmp"), path)


class Autocast(Callback):
    """Mixed precision (``torch.autocast``, bfloat16 by default: no loss scaling needed): each forward pass runs in
    autocast, the loss, backward pass and step in float32 on float32 outputs (lesson 10's command on CUDA). Give it
    before any callback that evaluates after an epoch, so evaluation runs in full precision."""

    def __init__(self, device_type: str = "cuda", dtype=torch.bfloat16):
        self.device_type, self.dtype, self.context = device_type, dtype, None

    def enter(self):
        self.context = torch.autocast(self.device_type, dtype=self.dtype)
        self.context.__enter__()

    def leave(self):
        if self.context is not None:
            self.context.__exit__(None, None, None)
            self.context = None

    def before_epoch(self, run):
        self.enter()

    def after_forward(self, run):
        self.leave()
        outputs = run.outputs
        run.outputs = tuple(o.float() for o in outputs) if isinstance(outputs, tuple) else outputs.float()

    def after_step(self, run):
        self.enter()

    def after_epoch(self, run):
        self.leave()
