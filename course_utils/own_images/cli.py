"""Metric learning on your own images in one command (lesson 10).

    python -m course_utils.own_images train FOLDER --out RUN_DIR [--epochs 10 --size 224 --trunk resnet50
                                                                  --weights imagenet --device auto]
    python -m course_utils.own_images search RUN_DIR IMAGE... [--k 8] [--grid FILE]
    python -m course_utils.own_images make-folder OUT [--per-class 200]   # Fashion-MNIST as PNGs, to try it

FOLDER holds one sub-folder of images per class. ``train`` writes model.pt, recipe.json, index.faiss and
gallery.json to RUN_DIR and a checkpoint after every epoch: interrupt it and run the same command again to
resume after the last finished epoch.
"""
import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from pytorch_metric_learning import losses, miners, samplers
from torch import nn

from .. import evaluation, models
from ..session import pick_device, seed_everything
from . import folder, index, network, train

CHECKPOINT = "checkpoint.pt"
LOSSES = {"circle": lambda: losses.CircleLoss(m=0.4, gamma=80),  # lesson 07's recipe (joint.RECIPE)
          "multi-similarity": lambda: losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5)}


def option(default, help, choices=None):
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class Recipe:
    """The course's recipe for real photos; every field is a ``train`` option of the same name."""

    trunk: str = option("resnet50", "resnet50 (2048 features; GPU at full size) or resnet18 (512; CPUs)",
                        sorted(network.TRUNKS))
    weights: str = option("imagenet", "imagenet (torch cache, else download), none, or a state-dict file")
    size: int = option(224, "image size in pixels (128 or 64 on a CPU)")
    embedding_dim: int = option(128, "embedding size")
    loss: str = option("circle", "metric loss, weighted against cross-entropy", sorted(LOSSES))
    metric_weight: float = option(0.1, "loss = metric_weight * metric loss + cross-entropy")
    m: int = option(4, "images per class in a batch (MPerClassSampler)")
    batch_size: int = option(32, "batch size (reduced to m * number of classes if larger)")
    epochs: int = option(10, "epochs in all (a rerun resumes and trains up to this number)")
    trunk_lr: float = option(None, "trunk learning rate (default: 1e-4 pretrained, 1e-3 from random weights)")
    embedder_lr: float = option(1e-3, "learning rate of the embedder and the classifier head")
    weight_decay: float = option(1e-4, "Adam weight decay")
    split: str = option("class", "class: random unseen test classes; first-classes: the last classes by name "
                        "are the test classes (CUB-200's protocol); image: test images of the same classes",
                        folder.SPLITS)
    test_fraction: float = option(0.5, "fraction of classes (or of each class's images) held out for testing")
    freeze_bn: bool = option(False, "freeze the trunk's batch-norm statistics")
    freeze_trunk: bool = option(False, "train only the embedder (linear probe: cheapest, for CPUs)")
    seed: int = option(0, "seed of the split, the initialisation and the batches")


def add_recipe_options(parser: argparse.ArgumentParser) -> None:
    """One ``--option`` per Recipe field, with its default, type and help."""
    for f in fields(Recipe):
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            parser.add_argument(flag, action="store_true", help=f.metadata["help"])
        else:
            kind = float if f.default is None else type(f.default)
            parser.add_argument(flag, type=kind, default=f.default, choices=f.metadata["choices"],
                                help=f"{f.metadata['help']} (default: {f.default})")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m course_utils.own_images", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    trainer = commands.add_parser("train", help="train on a folder of classes, export model and faiss index")
    trainer.add_argument("folder", type=Path, help="one sub-folder of images per class")
    trainer.add_argument("--out", type=Path, required=True, help="run folder (resumes if it holds a checkpoint)")
    trainer.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps, ...")
    trainer.add_argument("--offline", action="store_true", help="never download weights")
    trainer.add_argument("--workers", type=int, default=0, help="data-loading processes (use 4-8 with a GPU)")
    add_recipe_options(trainer)
    searcher = commands.add_parser("search", help="nearest indexed training images of query images")
    searcher.add_argument("run_dir", type=Path)
    searcher.add_argument("images", type=Path, nargs="+")
    searcher.add_argument("--k", type=int, default=8, help="neighbours per query (default: 8)")
    searcher.add_argument("--grid", type=Path, help="also draw the results into this PNG file")
    searcher.add_argument("--device", default="auto")
    maker = commands.add_parser("make-folder", help="write Fashion-MNIST images as PNG files, one folder a class")
    maker.add_argument("out", type=Path)
    maker.add_argument("--per-class", type=int, default=200, help="images per class (default: 200)")
    return parser


def device_from(name: str) -> torch.device:
    return pick_device() if name == "auto" else torch.device(name)


def start_or_resume(args, run_dir: Path) -> tuple:
    """(Recipe, saved record): the recipe of the run in ``run_dir`` if it has a checkpoint (only --epochs
    counts then), else the one on the command line, with an empty record."""
    saved = run_dir / index.FILES["recipe"]
    if (run_dir / CHECKPOINT).is_file() and saved.is_file():
        record = json.loads(saved.read_text())
        recipe = Recipe(**{**record["recipe"], "epochs": args.epochs})
        print(f"{run_dir} holds a checkpoint: resuming with its recipe ({saved}); other options are ignored.")
        return recipe, record
    return Recipe(**{f.name: getattr(args, f.name) for f in fields(Recipe)}), {}


def build_model(recipe: Recipe, num_classes: int, resuming: bool, download: bool) -> nn.Module:
    """A ``models.JointNet`` (embedding model + classifier head), with its weights (none when the checkpoint
    will supply them) and frozen parts."""
    net, source = network.embedding_model(recipe.trunk, recipe.embedding_dim,
                                          "none" if resuming else recipe.weights, download)
    print("weights:", "from the checkpoint" if resuming else source)
    if recipe.trunk_lr is None:
        recipe.trunk_lr = 1e-4 if net.trunk.pretrained else 1e-3
    if recipe.freeze_trunk:
        network.freeze_trunk(net)
    elif recipe.freeze_bn:
        network.freeze_batchnorm(net.trunk)
    return models.JointNet(net, num_classes)


def build_training(recipe: Recipe, model, train_set, workers: int) -> tuple:
    """The recipe's PML objects, loader and optimizer: (metric_loss, miner, loader, optimizer)."""
    metric_loss = LOSSES[recipe.loss]()
    miner = miners.MultiSimilarityMiner(epsilon=0.1)
    batch_size = train.batch_size_for(recipe.batch_size, recipe.m, len(train_set.classes))
    sampler = samplers.MPerClassSampler(train_set.labels, m=recipe.m, batch_size=batch_size,
                                        length_before_new_iter=max(len(train_set), batch_size))
    loader = torch.utils.data.DataLoader(train_set, batch_size, sampler=sampler, num_workers=workers,
                                         drop_last=True)
    groups = network.param_groups(model, model.embedding_net.trunk, recipe.trunk_lr, recipe.embedder_lr)
    return metric_loss, miner, loader, torch.optim.Adam(groups, weight_decay=recipe.weight_decay)


def write_record(run_dir: Path, recipe: Recipe, record: dict) -> None:
    record["recipe"] = asdict(recipe)
    (run_dir / index.FILES["recipe"]).write_text(json.dumps(record, indent=2) + "\n")


def train_command(args) -> int:
    start = time.perf_counter()
    if args.out.resolve().is_relative_to(args.folder.resolve()):
        raise folder.FolderError(f"Put the run folder outside {args.folder}, or it becomes one more class.")
    args.out.mkdir(parents=True, exist_ok=True)
    recipe, record = start_or_resume(args, args.out)
    seed_everything(recipe.seed)
    split = folder.load_split(args.folder, recipe.split, recipe.test_fraction, recipe.size, recipe.seed)
    print(folder.describe(split))
    device = device_from(args.device)
    model = build_model(recipe, len(split.train.classes), bool(record), download=not args.offline)
    metric_loss, miner, loader, optimizer = build_training(recipe, model, split.train, args.workers)
    net = model.embedding_net
    test_name = "test images" if recipe.split == "image" else "unseen classes"
    if not record:
        print(f"Measuring the untrained trunk features on the {len(split.test)} test images ...")
        record.update(folder=str(args.folder), baseline=evaluation.evaluate(net.trunk, split.test, device, "cosine"))
        write_record(args.out, recipe, record)
    record["history"] = train.fit(model, metric_loss, miner, optimizer, loader, device, recipe.epochs,
                                  checkpoint=args.out / CHECKPOINT, seed=recipe.seed, weight=recipe.metric_weight)
    print(f"Measuring the trained embedding, then indexing the {len(split.train)} training images ...")
    record["trained"] = evaluation.evaluate(net, split.test, device, "cosine")
    index.export(args.out, net, split.train.with_transform(folder.transform(recipe.size)), device,
                 recipe.trunk, recipe.size)
    write_record(args.out, recipe, record)
    table = {"trunk features, untrained": {test_name: record["baseline"]}, "trained": {test_name: record["trained"]}}
    print(evaluation.metrics_table(table))
    print(f"Wrote {', '.join(index.FILES.values())} to {args.out} ({time.perf_counter() - start:.0f} s)")
    return 0


def search_command(args) -> int:
    bad = [f"{path}: {why}" for path in args.images if (why := folder.unreadable(path))]
    if bad:
        raise folder.FolderError("Cannot read these query images:\n" + "\n".join(bad))
    run = index.load(args.run_dir)
    distances, indices = index.query(run, args.images, args.k, device_from(args.device))
    for path, row_d, row_i in zip(args.images, distances, indices):
        print(f"{path}:")
        for rank, (d, i) in enumerate(zip(row_d.tolist(), row_i.tolist()), start=1):
            print(f"  {rank:>3}  {d:.4f}  {run.classes[int(run.labels[i])]:<20}  {run.paths[i]}")
    if args.grid:
        import matplotlib

        matplotlib.use("Agg")
        from .. import plotting

        plotting.retrieval_grid([str(p) for p in args.images], None, run.paths, run.labels, indices, run.classes,
                                distances=distances, load=folder.open_rgb).savefig(args.grid, dpi=120)
        print(f"Wrote {args.grid}")
    return 0


def make_folder_command(args) -> int:
    folder.write_fashion_mnist(args.out, args.per_class)
    print(f"Wrote {10 * args.per_class} Fashion-MNIST PNG files to {args.out}/<class>/")
    return 0


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    command = {"train": train_command, "search": search_command, "make-folder": make_folder_command}
    try:
        return command[args.command](args)
    except (folder.FolderError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nInterrupted. Run the same command again to resume after the last finished epoch.", file=sys.stderr)
        return 130
