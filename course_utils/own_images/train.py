"""Lesson 07's joint training (a ``models.JointNet``: one forward pass, ``weight * metric loss + cross-entropy``)
trained by ``training.fit`` with a checkpoint after every epoch that the command resumes from (lesson 10)."""
import torch
import torch.distributed as dist

from .. import joint, training


def batch_size_for(batch_size: int, m: int, num_classes: int) -> int:
    """The largest batch size <= ``batch_size`` that MPerClassSampler accepts: a multiple of m, at most
    m * num_classes."""
    size = min(batch_size, m * num_classes) // m * m
    if size < 2 * m:
        raise ValueError(f"A batch needs at least 2 classes with m={m} images each; got batch_size={batch_size} "
                         f"and {num_classes} classes.")
    return size


def fit(model, metric_loss, miner, optimizer, loader, device, num_epochs: int, checkpoint=None, seed: int = 0,
        weight: float = 0.1, eval_fn=None, progress: bool = True, extra=(), keep_best=None) -> list:
    """``training.fit`` with lesson 07's ``joint.JointLoss``, a checkpoint and a seed per epoch: epochs already in
    ``checkpoint`` are skipped, the checkpoint is rewritten after every epoch, and each epoch is seeded with
    ``seed + epoch``, so an interrupted command resumed agrees with one that ran through. ``extra``: more callbacks
    before ``eval_fn``'s ``Track`` (``training.Autocast``, ``training.ShuffleEachEpoch``); ``keep_best``: a
    ``KeepBest`` after it."""
    callbacks = [training.SeedEachEpoch(seed), *extra, *([training.Track(eval_fn)] if eval_fn else []),
                 *([keep_best] if keep_best else []),
                 *([as_callback(checkpoint, progress)] if checkpoint is not None else [])]
    return training.fit(model, joint.JointLoss(metric_loss, miner, weight), optimizer, loader, device, num_epochs,
                        callbacks=callbacks, progress=progress)


def as_callback(checkpoint, verbose: bool) -> training.Callback:
    """A checkpoint callback: ``checkpoint`` itself, or ``training.Checkpoint`` of a path."""
    return checkpoint if isinstance(checkpoint, training.Callback) else training.Checkpoint(checkpoint, verbose)


def unwrapped_state(model) -> dict:
    """The state dict of the network, inside a DDP wrapper or not (the same keys with any number of processes)."""
    return getattr(model, "module", model).state_dict()


class KeepBest(training.Callback):
    """``training.BestEpoch`` that survives a resume: the best epoch's weights are saved to ``path`` (not kept in
    memory), the best so far is read from the resumed history, and the weights of the selected epoch are loaded
    after the last one (epoch selection on held-out images of the training classes)."""

    def __init__(self, select_on: str, path):
        self.select_on, self.path = select_on, path

    def best(self, history) -> float | None:
        return max((row[self.select_on] for row in history), default=None)

    def after_epoch(self, run):
        if run.row[self.select_on] == self.best(run.history) and not (dist.is_initialized() and dist.get_rank()):
            torch.save(unwrapped_state(run.model), self.path)

    def after_fit(self, run):
        best = self.best(run.history)
        if dist.is_initialized():
            dist.barrier()  # rank 0 has written the file
        if best is not None:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            getattr(run.model, "module", run.model).load_state_dict(state)
            for row in run.history:
                row["selected"] = row[self.select_on] == best
