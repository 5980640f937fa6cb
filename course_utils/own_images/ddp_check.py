"""The check that ``torchrun ... -m course_utils.own_images train`` trains what one process would (lesson 10):

    torchrun --nproc_per_node=2 -m course_utils.own_images.ddp_check FOLDER OUT_DIR [--batch-size 16 --m-per-class 2]

Every process builds the command's model, loader (``parallel.RankClassSampler``) and wrapped loss and miner, takes
its first batch and writes ``OUT_DIR/rank{rank}.pt``: the network's weights, its share of the batch, its loss and
the gradient DDP applies. One process on the concatenated batch (the oracle, in the tests) must find
``loss = metric_weight * world_size * metric loss + this process's cross-entropy`` and the same gradient.
The network runs in eval mode, so that batch norm's statistics do not depend on how the batch is split."""
import argparse
import os
import sys
from pathlib import Path

import torch

from .. import joint
from ..session import seed_everything
from . import cli, folder, parallel

RECIPE = {"trunk": "resnet18", "size": 16, "weights": "none", "embedding_dim": 16, "test_fraction": 0,
          "valid_fraction": 0}


def first_batch(recipe, split, model, world_size: int, rank: int) -> tuple:
    """(images, labels): this process's first batch from the command's loader, every process seeded alike."""
    _, _, loader, _ = cli.build_training(recipe, model, split.train, 0, world_size, rank)
    seed_everything(recipe.seed + 1)
    return next(iter(loader))


def loss_and_gradient(model, loss_fn, images, labels) -> dict:
    """The joint loss of the batch and the gradient of every parameter after backward, flattened."""
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model(images), labels)
    loss.backward()
    net = parallel.unwrap(model)
    return {"loss": loss.item(), "gradient": torch.cat([p.grad.flatten() for p in net.parameters()])}


def check(root, out_dir, batch_size: int, m: int) -> dict:
    """Each process's loss and gradient on its first batch with DDP and PML's wrappers; writes rank{rank}.pt."""
    rank, world_size, device = parallel.join("cpu")
    recipe = cli.Recipe(**RECIPE, batch_size=batch_size, m_per_class=m)
    seed_everything(recipe.seed)
    split = folder.load_split(root, "class", 0, recipe.size, recipe.seed)
    model = cli.build_model(recipe, len(split.train.classes), resuming=False, download=False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    images, labels = first_batch(recipe, split, model, world_size, rank)
    metric_loss, miner = cli.LOSSES[recipe.loss](), cli.miners.MultiSimilarityMiner(epsilon=0.1)
    wrapped, metric_loss, miner = parallel.wrap(model.eval(), metric_loss, miner, device)
    result = {"rank": rank, "world_size": world_size, "state": state, "images": images, "labels": labels,
              "metric_weight": recipe.metric_weight, "classes": len(split.train.classes),
              **loss_and_gradient(wrapped, joint.JointLoss(metric_loss, miner, recipe.metric_weight), images, labels)}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    parallel.leave()
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="torchrun --nproc_per_node=N -m course_utils.own_images.ddp_check")
    p.add_argument("folder", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--batch-size", type=int, default=16, help="all processes together")
    p.add_argument("--m-per-class", type=int, default=2)
    args = p.parse_args(argv)
    check(args.folder, args.out, args.batch_size, args.m_per_class)
    return 0


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # as course_utils.distributed: no interpreter clean-up after torchrun's processes are done
