"""Data-parallel training with ``torch.distributed`` (DDP), with pairs formed across all processes (lesson 09).

Every process holds a copy of the network and trains on its own share of each step's images; DDP averages
the gradients over the processes. PML's ``DistributedLossWrapper`` and ``DistributedMinerWrapper`` gather
the embeddings of all processes, so the loss sees every pair of the global batch, not only the pairs within
one process's batch. Run this module with ``torchrun``, which starts one process per ``--nproc_per_node``:

    # one machine, 2 processes on the CPU (backend gloo), or one per GPU (backend nccl)
    torchrun --nproc_per_node=2 -m course_utils.distributed train --out runs/ddp
    # the check of lesson 09: the wrapped loss and the gradients DDP applies against one process
    torchrun --nproc_per_node=2 -m course_utils.distributed check BATCH.pt --epsilon 0 --out check/

    # several machines: the same command on each, with torchrun's rendezvous flags
    torchrun --nnodes=2 --nproc_per_node=4 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \\
        --rdzv-id=dml09 -m course_utils.distributed train --out runs/ddp

``HOST`` is the name or address of one of the machines (any free port); ``--rdzv-id`` is any name the machines
share. ``--batch-size`` is per process: a step trains on ``world size × batch size`` images. ``--device auto``
runs each process on GPU ``LOCAL_RANK`` with nccl when there are enough GPUs, else on the CPU with gloo.
``python -m course_utils.distributed train --help`` lists every option.

This script trains lesson 09's Fashion-MNIST network. For a folder of your own images (a ResNet, a sampler of
each process's own classes, mixed precision, checkpoints that resume with any number of processes), the same
launch runs lesson 10's command: ``torchrun --nproc_per_node=N -m course_utils.own_images train FOLDER --out RUN``
(``course_utils.own_images.parallel``; docs/own_images.md).
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from pytorch_metric_learning import losses, miners
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu
from pytorch_metric_learning.utils.distributed import DistributedLossWrapper, DistributedMinerWrapper
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from . import lesson, models, session, training

LOSSES = {"multi-similarity": losses.MultiSimilarityLoss, "contrastive": losses.ContrastiveLoss}


def backend_for(device: torch.device) -> str:
    """The collective-communication backend for processes on ``device``: nccl on CUDA GPUs, gloo elsewhere."""
    return "nccl" if device.type == "cuda" else "gloo"


def process_device(kind: str = "auto") -> torch.device:
    """This process's device: GPU ``LOCAL_RANK`` (``kind`` cuda, or auto with a GPU per local process), else the CPU."""
    local_rank, local_size = int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if kind == "cuda" or (kind == "auto" and torch.cuda.device_count() >= local_size):
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def start(device: torch.device) -> None:
    """Join the process group torchrun set up (its address, rank and world size are in the environment)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend_for(device))


def shard(tensor, rank: int, world_size: int):
    """Process ``rank``'s share of a global batch (N, ...) -> (N / world_size, ...): consecutive rows."""
    if len(tensor) % world_size:
        raise ValueError(f"a global batch of {len(tensor)} does not split into {world_size} equal shares")
    size = len(tensor) // world_size
    return tensor[rank * size:(rank + 1) * size]


def loss_and_gradient(model, loss_fn, miner, images, labels) -> dict:
    """One forward and backward pass of ``model`` (plain or DDP) on (images, labels): the loss, every parameter's
    gradient as one vector (P,) (after DDP's averaging, for a DDP model) and the mined pairs (positive, negative)."""
    model.zero_grad(set_to_none=True)
    embeddings = model(images)
    indices_tuple = miner(embeddings, labels)
    loss = loss_fn(embeddings, labels, indices_tuple)
    loss.backward()
    gradient = torch.cat([p.grad.flatten() for p in model.parameters()]).detach().cpu()
    return {"loss": loss.item(), "gradient": gradient, "pairs": (len(indices_tuple[0]), len(indices_tuple[2]))}


def check(batch_file, out_dir, loss_fn, miner, device) -> dict:
    """Lesson 09's measurement, in each process: the loss, the mined pairs and the gradient DDP applies, with PML's
    ``loss_fn`` and ``miner`` wrapped (pairs across processes) and unwrapped (pairs within this process), on this
    process's share of the global batch in ``batch_file``: ``{"images", "labels", "state", "embedding_dim"}`` and
    optionally the trunk's ``widths``.

    The network runs in eval mode, so that BatchNorm's statistics do not depend on how the batch is split.
    Writes ``out_dir/rank{rank}.pt`` and returns what it wrote."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    batch = torch.load(batch_file, weights_only=True)
    trunk = models.ConvTrunk(widths=tuple(batch.get("widths", (32, 64, 128))))
    net = models.EmbeddingNet(trunk, batch["embedding_dim"])
    net.load_state_dict(batch["state"])
    model = DistributedDataParallel(net.to(device).eval(), device_ids=[device.index] if device.type == "cuda" else None)
    images, labels = (shard(batch[key], rank, world_size).to(device) for key in ("images", "labels"))
    result = {"rank": rank, "world_size": world_size, "backend": dist.get_backend(),
              "wrapped": loss_and_gradient(model, DistributedLossWrapper(loss_fn), DistributedMinerWrapper(miner),
                                           images, labels),
              "unwrapped": loss_and_gradient(model, loss_fn, miner, images, labels)}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    return result


def all_pairs(labels) -> tuple:
    """The (positive, negative) ordered pairs of a batch with these labels (N,), an image never with itself: the
    counts a miner that keeps every pair returns, whatever the embeddings."""
    positive_anchors, _, negative_anchors, _ = lmu.get_all_pairs_indices(labels)
    return len(positive_anchors), len(negative_anchors)


def mines_the_global_batch(wrapped_pairs, one_process_pairs, labels) -> bool:
    """Lesson 09's check of ``DistributedMinerWrapper``: a process's wrapped miner found exactly the (positive,
    negative) pairs of the unwrapped miner on the whole global batch (labels (N,)), and that miner kept strictly
    fewer than all the batch's pairs. Equal counts mean something only for a miner that chooses by the embeddings:
    a miner that keeps every pair finds ``all_pairs(labels)`` on any embeddings, so it fails this check."""
    return (tuple(wrapped_pairs) == tuple(one_process_pairs)
            and sum(one_process_pairs) < sum(all_pairs(labels)))


def load_check(out_dir) -> list:
    """What ``check`` wrote, one dict per process, in rank order."""
    return sorted((torch.load(f, weights_only=True) for f in Path(out_dir).glob("rank*.pt")), key=lambda r: r["rank"])


def relative_difference(a, b) -> float:
    """``|a - b| / |b|`` of two gradient vectors (P,): 0 when they are equal, about 1e-7 for float32 rounding."""
    return float((a - b).norm() / b.norm())


def distributed_loader(train_set, batch_size: int, seed: int) -> DataLoader:
    """Batches of ``batch_size`` (per process) from this process's share of ``train_set``, reshuffled each epoch."""
    sampler = DistributedSampler(train_set, shuffle=True, seed=seed, drop_last=True)
    return DataLoader(train_set, batch_size=batch_size, sampler=sampler, drop_last=True)


def train(model, loss_fn, miner, optimizer, loader, device, num_epochs: int) -> list:
    """``training.fit`` on a DDP ``model`` with PML's wrapped ``loss_fn`` and ``miner``, a new shuffle each epoch
    (the same in every process); returns one dict per epoch (epoch, this process's mean loss, seconds)."""
    return training.fit(model, loss_fn, optimizer, loader, device, num_epochs, miner=miner,
                        callbacks=[training.ShuffleEachEpoch()], progress=False)


def train_command(args, device) -> None:
    """The ``train`` command: DDP training on the seen classes; rank 0 saves the network and its history."""
    session.seed_everything(args.seed)  # the same initial weights everywhere (DDP also copies rank 0's to all)
    config = session.Config(seed=args.seed, device=device, quick=False)
    budget = lesson.Budget(train_per_class=args.train_per_class, eval_per_class=0, umap_per_class=0,
                           num_epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                           embedding_dim=args.embedding_dim)
    train_set = lesson.lesson_data(config, budget).train
    net = lesson.new_embedder(budget).to(device)
    model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    loss_fn = DistributedLossWrapper(LOSSES[args.loss]())
    miner = DistributedMinerWrapper(miners.MultiSimilarityMiner(epsilon=0.1))
    optimizer = torch.optim.Adam(model.parameters(), lr=budget.lr)
    history = train(model, loss_fn, miner, optimizer, distributed_loader(train_set, args.batch_size, args.seed),
                    device, args.epochs)
    if dist.get_rank() == 0:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.cpu() for k, v in net.state_dict().items()}, out / "model.pt")
        summary = {**vars(args), "world_size": dist.get_world_size(), "backend": dist.get_backend(),
                   "device": str(device), "images_per_step": dist.get_world_size() * args.batch_size,
                   "history": history}
        (out / "run.json").write_text(json.dumps(summary, indent=2))
        print(f"saved {out / 'model.pt'}: {len(train_set)} images, {summary['images_per_step']} per step, "
              f"{dist.get_world_size()} processes ({summary['backend']})")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="torchrun --nproc_per_node=N -m course_utils.distributed",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    commands = p.add_subparsers(dest="command", required=True)
    t = commands.add_parser("train", help="train an embedding network on the seen classes with DDP")
    t.add_argument("--out", required=True, help="folder for model.pt and run.json (written by rank 0)")
    t.add_argument("--epochs", type=int, default=2)
    t.add_argument("--batch-size", type=int, default=32, help="images per process and step")
    t.add_argument("--train-per-class", type=int, default=1500)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--embedding-dim", type=int, default=64)
    t.add_argument("--loss", choices=tuple(LOSSES), default="multi-similarity")
    t.add_argument("--seed", type=int, default=0)
    c = commands.add_parser("check", help="lesson 09's check: wrapped and unwrapped loss and gradients per process")
    c.add_argument("batch", help="a file with images, labels, state and embedding_dim (torch.save)")
    c.add_argument("--out", required=True, help="folder for rank{rank}.pt")
    c.add_argument("--loss", choices=tuple(LOSSES), default="multi-similarity")
    c.add_argument("--epsilon", type=float, default=0.1, help="the MultiSimilarityMiner's epsilon (lesson 09: 0)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if "RANK" not in os.environ:
        print("Start this module with torchrun, e.g.: torchrun --nproc_per_node=2 -m course_utils.distributed "
              f"{args.command} ...", file=sys.stderr)
        return 2
    device = process_device(args.device)
    start(device)
    try:
        if args.command == "train":
            train_command(args, device)
        else:
            check(args.batch, args.out, LOSSES[args.loss](), miners.MultiSimilarityMiner(epsilon=args.epsilon), device)
        dist.barrier()  # every process done before any tears down its connections
    finally:
        dist.destroy_process_group()
    return 0


def launch(nproc: int, args: list, timeout: float = 600):
    """Run ``torchrun --nproc_per_node=nproc -m course_utils.distributed *args`` in a subprocess, as the lesson
    does (one machine; ``torch.distributed.run`` is torchrun's module). Returns the finished process."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "course_utils.distributed", *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"torchrun failed (exit status {done.returncode}):\n{done.stderr[-3000:]}")
    return done


if __name__ == "__main__":
    status = main()
    # Leave without the interpreter's clean-up: on a busy machine, about one launch in five aborted there, after
    # main() had returned ("terminate called without an active exception", SIGABRT, no Python frame: a native
    # thread still running while the libraries' static objects were destroyed), and torchrun then reported the
    # whole run as failed. Everything is written and the process group destroyed by now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
