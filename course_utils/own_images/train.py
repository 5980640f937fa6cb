"""Lesson 07's joint training (a ``models.JointNet``: one forward pass, ``weight * metric loss + cross-entropy``)
trained by ``training.fit`` with a checkpoint after every epoch that the command resumes from (lesson 10)."""
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
        weight: float = 0.1, eval_fn=None, progress: bool = True) -> list:
    """``training.fit`` with lesson 07's ``joint.JointLoss``, a checkpoint and a seed per epoch: epochs already in
    ``checkpoint`` are skipped, the checkpoint is rewritten after every epoch, and each epoch is seeded with
    ``seed + epoch``, so an interrupted command resumed agrees with one that ran through."""
    callbacks = [training.SeedEachEpoch(seed), *([training.Track(eval_fn)] if eval_fn else []),
                 *([training.Checkpoint(checkpoint, verbose=progress)] if checkpoint is not None else [])]
    return training.fit(model, joint.JointLoss(metric_loss, miner, weight), optimizer, loader, device, num_epochs,
                        callbacks=callbacks, progress=progress)
