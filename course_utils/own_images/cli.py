"""Metric learning on your own images in one command (lesson 10; the guide is docs/own_images.md).

    python -m course_utils.own_images train FOLDER --out RUN_DIR [--epochs 10 --size 224 --trunk resnet50
                                                                  --weights imagenet --test-fraction 0.5]
    python -m course_utils.own_images index RUN_DIR GALLERY... [--index auto|flat|ivf|hnsw|ivfpq] [--rebuild]
    python -m course_utils.own_images search RUN_DIR IMAGE... [--k 8] [--threshold f1|fmr=1e-3|0.8|none]
    python -m course_utils.own_images evaluate RUN_DIR --queries Q --gallery G
    python -m course_utils.own_images calibrate RUN_DIR HELD_OUT_FOLDER
    python -m course_utils.own_images make-folder OUT [--per-class 200]   # Fashion-MNIST as PNGs, to try it
    torchrun --nproc_per_node=N -m course_utils.own_images train FOLDER --out RUN_DIR   # DDP, one process a GPU

FOLDER holds one sub-folder of images per class. ``train`` writes model.pt, model.ts (TorchScript: needs only
PyTorch), recipe.json, calibration.json (the "no match" threshold), index.faiss and gallery.json to RUN_DIR and a
checkpoint after every epoch: interrupt it and run the same command again to resume after the last finished epoch.
``index`` replaces the training images in the index by a gallery (a folder or files; a class is a folder's name)
and adds new images to it when run again; ``search`` answers "no match" below the calibrated threshold.
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

from .. import evaluation, models, sampling, training
from ..session import seed_everything
from . import commands as commands_module
from . import folder, index, network, parallel, train, verify

CHECKPOINT, BEST, TORCHSCRIPT = "checkpoint.pt", "best.pt", "model.ts"
LOSSES = {"circle": lambda: losses.CircleLoss(m=0.4, gamma=80),  # lesson 07's recipe (joint.RECIPE)
          "multi-similarity": lambda: losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5)}


# options added after runs were saved, with the value those runs had: a resume rebuilds their model as it was
OPTIONS_ADDED_LATER = {"neck": "none", "head": "linear"}


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
    neck: str = option("batchnorm", "after the embedder: batchnorm (BatchNorm1d: each dimension centred over the "
                       "batch, so the embeddings do not collapse into one cone; docs/own_images.md, section 8) or none",
                       sorted(models.NECKS))
    loss: str = option("circle", "metric loss, weighted against cross-entropy", sorted(LOSSES))
    metric_weight: float = option(0.1, "loss = metric_weight * metric loss + cross-entropy")
    head: str = option("cosine", "classifier head of the cross-entropy: cosine (16 * the cosine with each class's "
                       "weights, NormFace: only the direction of an embedding counts, as in search) or linear",
                       sorted(models.HEADS))
    m_per_class: int = option(4, "m, images per class in a batch (MPerClassSampler; each process with torchrun)")
    batch_size: int = option(32, "batch size, all processes together (reduced to m * number of classes if larger)")
    epochs: int = option(10, "epochs in all (a rerun resumes and trains up to this number)")
    trunk_lr: float = option(None, "trunk learning rate (default: 1e-4 pretrained, 1e-3 from random weights)")
    embedder_lr: float = option(1e-3, "learning rate of the embedder and the classifier head")
    weight_decay: float = option(1e-4, "Adam weight decay")
    split: str = option("class", "class: random unseen test classes; first-classes: the last classes by name "
                        "are the test classes (CUB-200's protocol); image: test images of the same classes",
                        folder.SPLITS)
    test_fraction: float = option(0.5, "fraction of classes (or of each class's images) held out for testing; 0: "
                                  "a final fit on every class")
    valid_fraction: float = option(0.2, "fraction of each training class's images held out to choose the epoch "
                                   "and calibrate the threshold (0: none, the last epoch is kept)")
    freeze_bn: bool = option(False, "freeze the trunk's batch-norm statistics")
    freeze_trunk: bool = option(False, "train only the embedder (linear probe: cheapest, for CPUs)")
    no_amp: bool = option(False, "no mixed precision on CUDA (bfloat16 autocast otherwise)")
    centre: bool = option(False, "subtract the training images' mean embedding (kept in model.pt and model.ts): "
                          "similarities spread out, but without the neck MAP@R on validation images was lower "
                          "(docs/own_images.md)")
    seed: int = option(0, "seed of the split, the initialisation and the batches")


def add_recipe_options(parser: argparse.ArgumentParser) -> None:
    """One ``--option`` per Recipe field, with its type and help; an option not given is absent from the parsed
    arguments (so a resume can tell what the command line changes)."""
    for f in fields(Recipe):
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            parser.add_argument(flag, action="store_true", default=argparse.SUPPRESS, help=f.metadata["help"])
        else:
            kind = float if f.default is None else type(f.default)
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, choices=f.metadata["choices"],
                                help=f.metadata["help"] + ("" if f.default is None else f" (default: {f.default})"))


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m course_utils.own_images", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    trainer = commands.add_parser("train", help="train on a folder of classes, export model and faiss index")
    trainer.add_argument("folder", type=Path, help="one sub-folder of images per class")
    trainer.add_argument("--out", type=Path, required=True, help="run folder (resumes if it holds a checkpoint)")
    trainer.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps, ... (torchrun: one a rank)")
    trainer.add_argument("--offline", action="store_true", help="never download weights")
    trainer.add_argument("--workers", type=int, default=0, help="data-loading processes (use 4-8 with a GPU)")
    trainer.add_argument("--index", default="auto", choices=index.KINDS, help="faiss index of the training images")
    add_recipe_options(trainer)
    commands_module.add_parsers(commands)
    maker = commands.add_parser("make-folder", help="write Fashion-MNIST images as PNG files, one folder a class")
    maker.add_argument("out", type=Path)
    maker.add_argument("--per-class", type=int, default=200, help="images per class (default: 200)")
    return parser


def start_or_resume(args, run_dir: Path) -> tuple:
    """(Recipe, saved record): the recipe of the run in ``run_dir`` if it has a checkpoint, else the one on the
    command line, with an empty record. A resume refuses options that differ from the run's, but ``--epochs``."""
    given = {f.name: getattr(args, f.name) for f in fields(Recipe) if hasattr(args, f.name)}
    saved = run_dir / index.FILES["recipe"]
    if not ((run_dir / CHECKPOINT).is_file() and saved.is_file()):
        return Recipe(**given), {}
    record = json.loads(saved.read_text())
    record["recipe"] = {**OPTIONS_ADDED_LATER, **record["recipe"]}  # a run saved before an option was added
    changed = [f"--{k.replace('_', '-')} (the run has {record['recipe'][k]}, the command {v})"
               for k, v in given.items() if k != "epochs" and record["recipe"].get(k) != v]
    if changed:
        raise ValueError(f"{run_dir} holds a checkpoint of another recipe; a resume cannot change "
                         f"{'; '.join(changed)}. Drop these options to resume, or train into a new --out.")
    print(f"{run_dir} holds a checkpoint: resuming with its recipe ({saved}).")
    return Recipe(**{**record["recipe"], **given}), record


def build_model(recipe: Recipe, num_classes: int, resuming: bool, download: bool) -> nn.Module:
    """A ``models.JointNet`` (embedding model + classifier head), with its weights (none when the checkpoint
    will supply them) and frozen parts."""
    net, source = network.embedding_model(recipe.trunk, recipe.embedding_dim,
                                          "none" if resuming else recipe.weights, download, recipe.neck)
    print("weights:", "from the checkpoint" if resuming else source)
    if recipe.trunk_lr is None:
        recipe.trunk_lr = 1e-4 if net.trunk.pretrained else 1e-3
    if recipe.freeze_trunk:
        network.freeze_trunk(net)
    elif recipe.freeze_bn:
        network.freeze_batchnorm(net.trunk)
    return models.JointNet(net, num_classes, recipe.head)


def build_training(recipe: Recipe, model, train_set, workers: int, world_size: int = 1, rank: int = 0) -> tuple:
    """The recipe's PML objects, loader and optimizer: (metric_loss, miner, loader, optimizer). With several
    processes, each one's loader draws ``m`` images of each class of its own share of the classes
    (``parallel.RankClassSampler``) and ``batch_size / world_size`` images a step."""
    metric_loss, miner = LOSSES[recipe.loss](), miners.MultiSimilarityMiner(epsilon=0.1)
    per_rank = train.batch_size_for(recipe.batch_size // world_size, recipe.m_per_class,
                                    len(train_set.classes) // world_size)
    length = max(len(train_set) // world_size, per_rank)
    if world_size == 1:
        sampler = samplers.MPerClassSampler(train_set.labels, m=recipe.m_per_class, batch_size=per_rank,
                                            length_before_new_iter=length)
    else:
        sampler = parallel.RankClassSampler(train_set.labels, recipe.m_per_class, per_rank, length, rank, world_size)
    loader = torch.utils.data.DataLoader(train_set, per_rank, sampler=sampler, num_workers=workers, drop_last=True)
    groups = network.param_groups(model, model.embedding_net.trunk, recipe.trunk_lr, recipe.embedder_lr)
    return metric_loss, miner, loader, torch.optim.Adam(groups, weight_decay=recipe.weight_decay)


def write_record(run_dir: Path, recipe: Recipe, record: dict) -> None:
    record["recipe"] = asdict(recipe)
    (run_dir / index.FILES["recipe"]).write_text(json.dumps(record, indent=2) + "\n")


def validation_metric(split: folder.Split, device):
    """``Track``'s metrics: MAP@R of the validation images (held-out images of the training classes), or None."""
    if split.valid is None:
        return None
    return lambda model: {"valid map_r": evaluation.evaluate(model.embedding_net, split.valid, device, "cosine")
                          ["map_r"]}


def callbacks_for(recipe: Recipe, split: folder.Split, run_dir: Path, device) -> dict:
    """``train.fit``'s extra callbacks: bfloat16 autocast on CUDA, the best epoch on the validation images."""
    amp = [training.Autocast(device.type)] if device.type == "cuda" and not recipe.no_amp else []
    best = train.KeepBest("valid map_r", run_dir / BEST) if split.valid is not None else None
    return {"extra": amp, "keep_best": best}


def held_out(split: folder.Split) -> tuple:
    """(name, images) the run is measured and calibrated on: the unseen test classes, the test images of the
    training classes, or for a final fit (no test set) the validation images."""
    if split.test is not None:
        return ("test images" if split.test.classes == split.train.classes else "unseen classes"), split.test
    if split.valid is None:
        raise folder.FolderError("--test-fraction 0 needs held-out images: give --valid-fraction above 0.")
    return "validation images", split.valid


def measure(model, images, device) -> dict:
    """Retrieval metrics of ``model`` on ``images`` by cosine, and the mean cosine similarity of two of them."""
    embeddings, labels = evaluation.embed(model, images, device)
    return {**evaluation.retrieval_metrics(embeddings, labels, "cosine"), "mean_cos": sampling.mean_cosine(embeddings)}


def centring_effect(embeddings, labels, mean) -> dict:
    """MAP@R and mean cosine of held-out ``embeddings`` (N, D) as trained and with ``mean`` (D,) subtracted."""
    return {name: {"map_r": evaluation.retrieval_metrics(e, labels, "cosine")["map_r"],
                   "mean_cos": sampling.mean_cosine(e)} for name, e in (("as trained", embeddings),
                                                                         ("centred", embeddings - mean))}


def centring(net, split: folder.Split, gallery, device, apply: bool) -> tuple:
    """The effect of centring on the validation images (or None), measured either way, and if ``apply``, ``net``
    centred on the mean of the training images' (embeddings, labels) ``gallery`` (``network.centre``). Returns
    (the gallery's (embeddings, labels), centred if applied, the effect)."""
    effect = None if split.valid is None else centring_effect(*evaluation.embed(net, split.valid, device),
                                                              gallery[0].float().mean(0))
    if not apply:
        return gallery, effect
    mean = network.centre(net, gallery[0])
    return (gallery[0] - mean, gallery[1]), effect


def search_calibration(net, split: folder.Split, gallery, device) -> dict:
    """The search calibration (``verify.nearest_scores``) of the held-out images (validation images of the training
    classes, and the test images, whose classes the index of the training images lacks when the split is by class)
    against ``gallery``, the training images' (embeddings, labels); on held-out pairs when no query (or every one)
    finds a wrong class."""
    parts = [s for s in (split.valid, split.test) if s is not None]
    embedded = [evaluation.embed(net, s, device) for s in parts]
    names = [s.classes[int(c)] for s, (_, labels) in zip(parts, embedded) for c in labels]
    queries = torch.cat([e for e, _ in embedded])
    positives, negatives = verify.nearest_scores(queries, names, gallery[0],
                                                 [split.train.classes[int(c)] for c in gallery[1]])
    if len(positives) and len(negatives):
        return {**verify.calibrate_scores(positives, negatives), "kind": "search"}
    print("Every held-out query found a neighbour of its class (or none did): calibrating on pairs instead.")
    return verify.calibrate(queries, torch.tensor([sorted(set(names)).index(n) for n in names]))


def finish(args, recipe: Recipe, split: folder.Split, net, record: dict, device) -> None:
    """After training: measure, calibrate the "no match" threshold on the held-out images, export the model (state
    dict and TorchScript) and the index of the training images, and print the table."""
    name, images = held_out(split)
    print(f"Embedding the training images, measuring the trained embedding on the {len(images)} {name} ...")
    training_images = split.train.with_transform(index.preprocess(recipe.trunk, recipe.size))
    gallery = evaluation.embed(net, training_images, device)
    # before measuring, calibrating and exporting: with --centre all of them use the centred embedding
    gallery, record["centring"] = centring(net, split, gallery, device, recipe.centre)
    record["trained"] = measure(net, images, device)
    calibration = search_calibration(net, split, gallery, device)
    verify.save(args.out, {**calibration, "on": "held-out images against the training images"})
    index.export(args.out, net, training_images, device, recipe.trunk, recipe.size, args.index, embedded=gallery)
    network.export_torchscript(args.out / TORCHSCRIPT, net, recipe.size)
    write_record(args.out, recipe, record)
    print(evaluation.metrics_table({"trunk features, untrained": {name: record["baseline"]},
                                    "trained": {name: record["trained"]}}))
    print(f"mean cosine similarity of two {name}: {record['trained']['mean_cos']:.3f} (near 1: collapsed)")
    if record.get("centring"):
        print(f"validation images ({'centred' if recipe.centre else 'kept as trained'}): ", ", ".join(
            f"{k}: MAP@R {v['map_r']:.3f}, mean cosine {v['mean_cos']:.3f}" for k, v in record["centring"].items()))
    print(verify.summary(calibration))


def train_command(args) -> int:
    start = time.perf_counter()
    if args.out.resolve().is_relative_to(args.folder.resolve()):
        raise folder.FolderError(f"Put the run folder outside {args.folder}, or it becomes one more class.")
    rank, world_size, device = parallel.join(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    recipe, record = start_or_resume(args, args.out)
    seed_everything(recipe.seed)
    split = folder.load_split(args.folder, recipe.split, recipe.test_fraction, recipe.size, recipe.seed,
                              recipe.valid_fraction, network.eval_resize(recipe.trunk), verify=not record,
                              skip=[path for path, _ in record.get("skipped", [])])  # a resume opens no file
    print(folder.describe(split))
    model = build_model(recipe, len(split.train.classes), bool(record), download=not args.offline)
    metric_loss, miner, loader, optimizer = build_training(recipe, model, split.train, args.workers, world_size, rank)
    net = model.embedding_net
    if not record:
        name, images = held_out(split)
        print(f"Measuring the untrained trunk features on the {len(images)} {name} ...")
        record.update(folder=str(args.folder), skipped=split.skipped, baseline=measure(net.trunk, images, device))
        if rank == 0:
            write_record(args.out, recipe, record)
    record["history"] = parallel.fit(model, metric_loss, miner, optimizer, loader, device, recipe.epochs,
                                     args.out / CHECKPOINT, recipe.seed, recipe.metric_weight,
                                     validation_metric(split, device), **callbacks_for(recipe, split, args.out, device))
    if rank == 0:
        finish(args, recipe, split, net, record, device)
        print(f"Wrote {', '.join(index.FILES.values())}, {TORCHSCRIPT} and {verify.FILE} to {args.out} "
              f"({time.perf_counter() - start:.0f} s)")
    parallel.leave()
    return 0


def make_folder_command(args) -> int:
    folder.write_fashion_mnist(args.out, args.per_class)
    print(f"Wrote {10 * args.per_class} Fashion-MNIST PNG files to {args.out}/<class>/")
    return 0


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    command = {"train": train_command, "make-folder": make_folder_command, **commands_module.COMMANDS}
    try:
        return command[args.command](args)
    except (folder.FolderError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nInterrupted. Run the same command again to resume after the last finished epoch.", file=sys.stderr)
        return 130
