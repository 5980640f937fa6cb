"""The course's pipeline timed against the usual tutorial pipeline and against the hardware's bound (issue 8).

    python benchmarks/benchmark.py --device cpu --threads 2          # on an idle machine, pinned with taskset
    python benchmarks/benchmark.py --device cuda                     # the GPU, with the device-resident variant

Side by side, on one model (``ConvTrunk`` + a linear layer to 64 dims, as ``lesson.new_embedder``) with the same
initial weights and the same Fashion-MNIST images:

- course:  ``data.make_loader`` over the in-memory TensorDataset + ``training.train_epoch`` on the network in
  channels-last order (``models.on_device``, as ``training.fit`` does); ``evaluation.embed``, which runs
  ``models.for_inference`` (batch norm folded into the convolutions, channels-last).
- usual:   what PML's example notebooks do: torchvision's ``FashionMNIST`` (PIL images, ``ToTensor`` and
  ``Normalize``, built offline from the course's IDX files) through a ``DataLoader`` with 2 workers and PML's
  example training loop; embeddings with PML's ``testers.BaseTester().get_all_embeddings`` (batch 32, 2 workers).
- course_device (on a GPU, or on the CPU with ``--device-variants``): the whole data set on the device, batches
  sliced from it in make_loader's order, channels_last, autocast (bf16 by default on a GPU), one sync per epoch;
  ``course_device_compiled`` adds ``torch.compile`` (its compile time reported apart).
- model_only: the course's training step (or forward pass) on one resident batch: the ceiling for its pipeline.

Each row has images/s, seconds, peak memory (the process's resident high-water mark, reset per phase where Linux
allows, DataLoader workers not included; on a GPU also torch's peak allocation) and achieved GFLOP/s: FLOPs per
image (``torch.utils.flop_counter``, convolutions and matrix products) times images/s, as a fraction of the conv
and matmul peaks measured on the same machine. Retrieval times ``evaluation.chunked_retrieval_metrics`` on
synthetic Gaussian classes (and PML's ``AccuracyCalculator`` on the smaller sizes, on a CPU).

The table is printed and written as JSON (``--out``, default ``build/benchmark.json``), rewritten after each part
so that a run cut short keeps what it measured. Keys: ``meta``, ``flops``, ``peaks``, ``training``, ``embedding``
(each ``{pipeline: row}`` plus ``speedup``), ``retrieval`` (a list of rows) and ``targets``.
"""
import argparse
import contextlib
import copy
import gc
import gzip
import io
import json
import math
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from course_utils import data, evaluation, models, training

TARGETS = {"cpu": {"training": 1.5, "embedding": 3.0}, "cuda": {"training_device": 10.0}}
GPU_CHUNK_BYTES = 2**30  # one chunk of retrieval distances on a GPU: fewer, larger matrix products


# ---------------------------------------------------------------- command line and set-up

def parse_args(argv=None) -> argparse.Namespace:
    """The benchmark's options; sizes default by device (see ``--help``)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, help="torch (and faiss) threads; default: torch's choice")
    p.add_argument("--out", default="build/benchmark.json", help="where to write the JSON results")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-images", type=int, default=15000, help="images in the timed training epoch")
    p.add_argument("--test-images", type=int, default=10000, help="images embedded")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the usual pipeline")
    p.add_argument("--usual-embed-batch-size", type=int, default=32, help="PML BaseTester's default")
    p.add_argument("--device-variants", action="store_true", help="also run course_device on the CPU")
    p.add_argument("--device-batch-sizes", type=int, nargs="*", help="extra batch sizes for course_device "
                   "(informative: a larger batch is a different training); default 1024 on a GPU")
    p.add_argument("--amp", choices=["auto", "bf16", "none"], default="auto",
                   help="autocast of course_device; auto: bf16 on a GPU, none on a CPU")
    p.add_argument("--compile", choices=["auto", "on", "off"], default="auto", help="auto: on for a GPU")
    p.add_argument("--compile-mode", default=None, help="torch.compile's mode, e.g. reduce-overhead")
    p.add_argument("--retrieval-sizes", type=int, nargs="*", help="default: 10000 100000 (cpu), 10000 100000 "
                   "1000000 (cuda)")
    p.add_argument("--retrieval-dim", type=int, default=128)
    p.add_argument("--retrieval-class-size", type=int, default=1000,
                   help="samples per synthetic class: k = this - 1 at every size")
    p.add_argument("--retrieval-distance", choices=evaluation.DISTANCES, default="euclidean")
    p.add_argument("--retrieval-chunk", type=int, help="queries per chunk; default: evaluation's choice")
    p.add_argument("--pml-max-size", type=int, default=10000, help="also time PML's AccuracyCalculator up to this N")
    p.add_argument("--matmul-size", type=int, help="square matmul for the peak; default 2048 (cpu), 8192 (cuda)")
    p.add_argument("--conv-batch", type=int, help="batch of the peak conv; default 256 (cpu), 4096 (cuda)")
    for part in ("peaks", "training", "embedding", "retrieval"):
        p.add_argument(f"--skip-{part}", action="store_true")
    return p.parse_args(argv)


def configure(args) -> torch.device:
    """Threads (torch's and faiss's), the device, and sizes that default by device."""
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
        if evaluation.has_faiss():
            import faiss

            faiss.omp_set_num_threads(args.threads)
    args.amp = {"auto": "bf16" if cuda else "none"}.get(args.amp, args.amp)
    args.compile = {"auto": "on" if cuda else "off"}.get(args.compile, args.compile)
    args.device_variants = args.device_variants or cuda
    args.device_batch_sizes = [1024] if args.device_batch_sizes is None and cuda else args.device_batch_sizes or []
    args.retrieval_sizes = args.retrieval_sizes or ([10_000, 100_000, 1_000_000] if cuda else [10_000, 100_000])
    args.matmul_size = args.matmul_size or (8192 if cuda else 2048)
    args.conv_batch = args.conv_batch or (4096 if cuda else 256)
    return device


def machine_info(device, args) -> dict:
    """What ran where: versions, processor, threads, GPU, and the options."""
    info = {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
            "threads": torch.get_num_threads(), "cpus_usable": _usable_cpus(),
            "cpu_model": _cpu_model(), "faiss": evaluation.has_faiss(), "argv": sys.argv[1:],
            "options": {k: v for k, v in vars(args).items()}, "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _usable_cpus() -> int:
    """CPUs this process may run on (``taskset`` narrows them)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    except OSError:
        return platform.processor()


# ---------------------------------------------------------------- timing and memory

def _status_mb(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process in MB, from /proc; else the lifetime peak from getrusage."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak_rss() -> bool:
    """Reset this process's resident high-water mark (Linux: ``5 > /proc/self/clear_refs``); False if not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def sync(device) -> None:
    """Wait for the device's queued work, so that wall-clock time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Phase:
    """``with Phase(device) as phase:`` -> ``phase.row()``: seconds and peak memory of the block."""

    def __init__(self, device):
        self.device = device

    def __enter__(self):
        sync(self.device)
        gc.collect()
        self.reset = _reset_peak_rss()
        self.start_rss = _status_mb("VmRSS")
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        sync(self.device)
        self.seconds = time.perf_counter() - self.start
        self.peak_rss = _status_mb("VmHWM")
        self.peak_cuda = torch.cuda.max_memory_allocated(self.device) / 2**20 if self.device.type == "cuda" else None

    def row(self, **extra) -> dict:
        """``{"seconds", "peak_rss_mb", "start_rss_mb", "peak_rss_is_lifetime", ["peak_cuda_mb"]}`` and ``extra``."""
        row = {"seconds": self.seconds, "peak_rss_mb": round(self.peak_rss, 1),
               "start_rss_mb": round(self.start_rss, 1), "peak_rss_is_lifetime": not self.reset}
        if self.peak_cuda is not None:
            row["peak_cuda_mb"] = round(self.peak_cuda, 1)
        return row | extra


def best_seconds(fn, device, repeats: int = 5) -> float:
    """The fastest of ``repeats`` timed calls of ``fn()``, after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def write_json(results: dict, path) -> None:
    """Write ``results`` to ``path`` atomically (a run cut short leaves the last complete file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_finite(results), indent=2, default=str, allow_nan=False))
    tmp.replace(path)


def _finite(obj):
    """``obj`` with NaN and infinities replaced by None (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


# ---------------------------------------------------------------- FLOPs and the hardware's peaks

def new_model(seed: int) -> models.EmbeddingNet:
    """The course's network (``lesson.new_embedder``'s: ConvTrunk + Linear to 64), initialised from ``seed``."""
    torch.manual_seed(seed)
    return models.EmbeddingNet(models.ConvTrunk(), 64)


def model_flops(batch_size: int) -> dict:
    """FLOPs per image of the forward pass and of forward + backward (convolutions and matrix products; they grow
    linearly with the batch, so a small one counts them)."""
    from pytorch_metric_learning import losses
    from torch.utils.flop_counter import FlopCounterMode

    model, images = new_model(0), torch.randn(batch_size, 1, 28, 28)
    labels = torch.arange(batch_size) % 5
    with FlopCounterMode(display=False) as forward:
        model(images)
    with FlopCounterMode(display=False) as train:
        losses.ContrastiveLoss()(model(images), labels).backward()
    return {"forward_per_image": forward.get_total_flops() / batch_size,
            "train_per_image": train.get_total_flops() / batch_size}


def matmul_gflops(device, size: int, dtype=torch.float32) -> float:
    """GFLOP/s of a square ``size`` matrix product: the machine's matmul peak, as torch reaches it."""
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    return 2 * size**3 / best_seconds(lambda: a @ b, device) / 1e9


def conv_gflops(device, batch: int, dtype=torch.float32, channels_last: bool = False) -> float:
    """GFLOP/s of a representative conv: 64 -> 128 channels, 3x3, on 14x14 maps (the trunk's widest layer)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    conv = torch.nn.Conv2d(64, 128, 3, padding=1, bias=False).to(device, dtype, memory_format=fmt)
    x = torch.randn(batch, 64, 14, 14, device=device, dtype=dtype).contiguous(memory_format=fmt)
    with torch.inference_mode():
        seconds = best_seconds(lambda: conv(x), device)
    return 2 * batch * 128 * 64 * 9 * 14 * 14 / seconds / 1e9


def peaks(device, args) -> dict:
    """The matmul and conv peaks of this machine (fp32; on a GPU also bf16, channels_last)."""
    out = {"matmul_gflops": matmul_gflops(device, args.matmul_size),
           "conv_gflops": max(conv_gflops(device, args.conv_batch, channels_last=cl) for cl in (False, True))}
    if device.type == "cuda":
        out["matmul_bf16_gflops"] = matmul_gflops(device, args.matmul_size, torch.bfloat16)
        out["conv_bf16_gflops"] = conv_gflops(device, args.conv_batch, torch.bfloat16, channels_last=True)
    return out


def add_compute(row: dict, flops_per_image: float, peak: dict, bf16: bool = False) -> dict:
    """Add achieved GFLOP/s and its fraction of the conv and matmul peaks (the bf16 ones for a bf16 pipeline)."""
    gflops = row["images_per_s"] * flops_per_image / 1e9
    suffix = "_bf16" if bf16 and "conv_bf16_gflops" in peak else ""
    row["gflops"] = round(gflops, 2)
    for kind in ("conv", "matmul"):
        if f"{kind}{suffix}_gflops" in peak:
            row[f"fraction_of_{kind}_peak"] = round(gflops / peak[f"{kind}{suffix}_gflops"], 4)
    return row


# ---------------------------------------------------------------- the data, two ways

def course_sets(train_images: int, test_images: int):
    """The course's in-memory TensorDatasets: the first images of the train and test splits, normalised."""
    train, test = (data.load_fashion_mnist(split) for split in ("train", "test"))
    return [torch.utils.data.TensorDataset(*(t[:n] for t in ds.tensors))
            for ds, n in ((train, train_images), (test, test_images))]


def usual_sets(train_images: int, test_images: int, workdir):
    """torchvision's ``FashionMNIST`` with ``ToTensor()`` and ``Normalize``, as tutorials build it, read offline
    from the course's IDX files (decompressed into ``workdir``) and cut to the same first images."""
    from torchvision import datasets, transforms

    raw = Path(workdir) / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for image_file, label_file in data.FILES.values():
        for name in (image_file, label_file):
            with gzip.open(data.default_root() / name) as src, open(raw / name.removesuffix(".gz"), "wb") as dst:
                shutil.copyfileobj(src, dst)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((data.MEAN,), (data.STD,))])
    sets = []
    for train, n in ((True, train_images), (False, test_images)):
        ds = datasets.FashionMNIST(str(workdir), train=train, transform=transform, download=False)
        ds.data, ds.targets = ds.data[:n], ds.targets[:n]
        sets.append(ds)
    return sets


def loader_batches(loader) -> torch.Tensor:
    """The index batches (num_batches, batch_size) that the next plain pass over ``loader`` (``data.make_loader``'s
    DataLoader) would draw, computed from its own sampler without fetching a single image: the usual pipeline's
    batches for the same seed. (``training.train_epoch`` sees another order of the same images: its tqdm wrapper
    opens, and drops, one extra iterator over the loader, which draws from the loader's generator once more.)"""
    torch.empty((), dtype=torch.int64).random_(generator=loader.generator)  # the draw each DataLoader pass makes
    return torch.tensor(list(loader.batch_sampler))


# ---------------------------------------------------------------- training, three ways

def usual_train_epoch(model, loss_func, mining_func, device, train_loader, optimizer) -> float:
    """PML's example notebooks' ``train`` (without their printing): one epoch; returns the last loss."""
    model.train()
    for data_, labels in train_loader:
        data_, labels = data_.to(device), labels.to(device)
        optimizer.zero_grad()
        embeddings = model(data_)
        indices_tuple = mining_func(embeddings, labels) if mining_func else None
        loss = loss_func(embeddings, labels, indices_tuple)
        loss.backward()
        optimizer.step()
    return loss.item()


def device_train_epoch(model, loss_fn, optimizer, images, labels, batches, amp=None) -> float:
    """One epoch over device-resident ``images`` (N, 1, 28, 28) and ``labels`` (N,) in the order ``batches``
    (B, batch) on their device; autocast to ``amp`` if given; one sync at the end. Returns the mean loss."""
    model.train()
    total = torch.zeros((), device=images.device)
    for batch in batches:
        with torch.autocast(images.device.type, dtype=amp, enabled=amp is not None):
            outputs = model(images[batch])
        loss = loss_fn(outputs.float(), labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach()
    return (total / len(batches)).item()


def warm_up(model, device, batch_size: int, memory_format=torch.contiguous_format) -> None:
    """Two training steps of a throwaway copy of ``model`` on random data: one-time library set-up (oneDNN
    primitives, cuDNN plans, CUDA context) happens here, not in the timed epoch."""
    from pytorch_metric_learning import losses

    clone = copy.deepcopy(model).to(device, memory_format=memory_format)
    optimizer = torch.optim.Adam(clone.parameters(), lr=1e-3)
    images, labels = torch.randn(batch_size, 1, 28, 28, device=device), torch.arange(batch_size, device=device) % 5
    for _ in range(2):
        loss = losses.ContrastiveLoss()(clone(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    sync(device)


def train_row(phase: Phase, images: int, loss: float, batch_size: int, **extra) -> dict:
    """One training row: images/s from the phase's time."""
    return phase.row(images=images, images_per_s=images / phase.seconds, loss=loss, batch_size=batch_size, **extra)


def time_course_training(model, train_set, args, device) -> dict:
    """The course's pipeline: ``data.make_loader`` + ``training.train_epoch`` (PML's ContrastiveLoss, Adam) on the
    network in ``models.on_device``'s layout, as ``training.fit`` trains it."""
    from pytorch_metric_learning import losses

    models.on_device(model, device)
    loader = data.make_loader(train_set, args.batch_size, seed=args.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    warm_up(model, device, args.batch_size)
    with Phase(device) as phase:
        loss = training.train_epoch(model, losses.ContrastiveLoss(), None, optimizer, loader, device, progress=False)
    return train_row(phase, len(loader) * args.batch_size, loss, args.batch_size)


def time_usual_training(model, usual_train, args, device) -> dict:
    """PML's example pipeline: shuffled DataLoader with workers over PIL images, PML's example loop."""
    from pytorch_metric_learning import losses

    model.to(device)
    loader = torch.utils.data.DataLoader(usual_train, batch_size=args.batch_size, shuffle=True,
                                         num_workers=args.workers, generator=torch.Generator().manual_seed(args.seed),
                                         drop_last=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    warm_up(model, device, args.batch_size)
    with Phase(device) as phase:
        loss = usual_train_epoch(model, losses.ContrastiveLoss(), None, device, loader, optimizer)
    return train_row(phase, len(loader) * args.batch_size, loss, args.batch_size, workers=args.workers)


def amp_dtype(args):
    """The autocast dtype of ``--amp``: bf16 (no loss scaling needed), or None for full fp32."""
    return {"bf16": torch.bfloat16}.get(args.amp)


def time_device_training(model, train_set, args, device, batch_size: int, compiled: bool,
                         channels_last: bool = True) -> dict:
    """course_device: data on the device, make_loader's batches sliced from it, channels_last, autocast, fused
    Adam on a GPU; with ``compiled``, ``torch.compile(model)``: the first epoch compiles (``compile_s``), the
    second is timed."""
    from pytorch_metric_learning import losses

    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    images, labels = (t.to(device) for t in train_set.tensors)
    loader = data.make_loader(train_set, batch_size, seed=args.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=device.type == "cuda" or None)
    net = torch.compile(model, mode=args.compile_mode) if compiled else model
    warm_up(model, device, batch_size, memory_format)
    extra = {}
    if compiled:
        with Phase(device) as first:
            device_train_epoch(net, losses.ContrastiveLoss(), optimizer, images, labels,
                               loader_batches(loader).to(device), amp_dtype(args))
        extra["first_epoch_s"] = first.seconds
    batches = loader_batches(loader).to(device)
    with Phase(device) as phase:
        loss = device_train_epoch(net, losses.ContrastiveLoss(), optimizer, images, labels, batches, amp_dtype(args))
    if compiled:
        extra["compile_s"] = max(0.0, extra["first_epoch_s"] - phase.seconds)
    return train_row(phase, batches.numel(), loss, batch_size, amp=args.amp, channels_last=channels_last, **extra)


def time_model_only(model, args, device) -> dict:
    """The course's training step alone (``models.on_device``'s layout), on one resident batch: the ceiling of the
    course's pipeline at this batch size."""
    from pytorch_metric_learning import losses

    models.on_device(model, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = torch.randn(args.batch_size, 1, 28, 28, device=device)
    labels = torch.arange(args.batch_size, device=device) % 5
    steps = 50 if device.type == "cuda" else max(1, min(10, args.train_images // args.batch_size))
    loss_fn = losses.ContrastiveLoss()

    def step():
        loss = loss_fn(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    warm_up(model, device, args.batch_size)
    with Phase(device) as phase:
        for _ in range(steps):
            step()
    return train_row(phase, steps * args.batch_size, None, args.batch_size)


def time_loader(loader, device) -> dict:
    """The data pipeline alone: one pass over ``loader``, each batch moved to ``device``; images/s."""
    with Phase(device) as phase:
        images = sum(len(batch.to(device)) for batch, _ in loader)
    return phase.row(images=images, images_per_s=images / phase.seconds)


def loaders_only(sets, args, device) -> dict:
    """``{"course", "usual"}``: how fast each pipeline's loader alone delivers the training batches."""
    usual = torch.utils.data.DataLoader(sets["usual"][0], batch_size=args.batch_size, shuffle=True,
                                        num_workers=args.workers, drop_last=True)
    return {"course": time_loader(data.make_loader(sets["course"][0], args.batch_size, seed=args.seed), device),
            "usual": time_loader(usual, device)}


def training_part(sets, args, device, flops, peak) -> dict:
    """All training rows, from one set of initial weights, the speedups over the usual pipeline, and the
    loaders alone (``loaders_only``)."""
    course_train, usual_train = sets["course"][0], sets["usual"][0]
    initial = new_model(args.seed)
    rows = {"course": time_course_training(copy.deepcopy(initial), course_train, args, device),
            "usual": time_usual_training(copy.deepcopy(initial), usual_train, args, device),
            "model_only": time_model_only(copy.deepcopy(initial), args, device)}
    if args.device_variants:
        rows.update(device_training_rows(initial, course_train, args, device))
    for name, row in rows.items():
        add_compute(row, flops["train_per_image"], peak, bf16=row.get("amp") == "bf16")
    return with_speedups(rows) | {"loaders_only": loaders_only(sets, args, device)}


def device_training_rows(initial, train_set, args, device) -> dict:
    """course_device at the pipeline's batch size and at the extra batch sizes (eager; ``compiled_part`` compiles)."""
    rows = {"course_device": time_device_training(copy.deepcopy(initial), train_set, args, device,
                                                  args.batch_size, compiled=False)}
    for size in args.device_batch_sizes:
        rows[f"course_device_batch{size}"] = time_device_training(copy.deepcopy(initial), train_set, args, device,
                                                                 size, compiled=False)
    return rows


def compiled_part(sets, args, device, results: dict) -> None:
    """``course_device_compiled`` into ``results["training"]``, run last: compiling may take long, and a run cut
    short then keeps every other part."""
    row = guarded(time_device_training, new_model(args.seed), sets["course"][0], args, device, args.batch_size,
                  compiled=True)
    if "images_per_s" in row:
        add_compute(row, results["flops"]["train_per_image"], results["peaks"], bf16=row.get("amp") == "bf16")
    rows = {k: v for k, v in results["training"].items() if k not in ("speedup", "speedup_device", "loaders_only")}
    results["training"] = with_speedups(rows | {"course_device_compiled": row}) | {
        "loaders_only": results["training"].get("loaders_only")}


def guarded(fn, *args, **kwargs) -> dict:
    """``fn(...)``, or ``{"error": ...}`` if it raises (a variant that fails must not lose the others)."""
    try:
        return fn(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - reported in the results, not hidden
        return {"error": f"{type(err).__name__}: {err}"[:500]}


def with_speedups(rows: dict) -> dict:
    """``rows`` plus ``speedup`` (course / usual) and ``speedup_device`` (best course_device* at the same batch
    size / usual), in images per second."""
    usual = rows["usual"]["images_per_s"]
    out = dict(rows, speedup=rows["course"]["images_per_s"] / usual)
    device = [row["images_per_s"] for name, row in rows.items()
              if name.startswith("course_device") and "images_per_s" in row
              and row.get("batch_size") == rows["course"].get("batch_size")]
    if device:
        out["speedup_device"] = max(device) / usual
    return out


# ---------------------------------------------------------------- embedding, three ways

def time_course_embed(model, test_set, device) -> dict:
    """The course's ``evaluation.embed`` (batches of 512 from the in-memory set)."""
    model.to(device)
    evaluation.embed(model, torch.utils.data.Subset(test_set, range(8)), device)  # warm-up
    with Phase(device) as phase:
        embeddings, _ = evaluation.embed(model, test_set, device)
    return phase.row(images=len(embeddings), images_per_s=len(embeddings) / phase.seconds, batch_size=512)


def time_usual_embed(model, usual_test, args, device) -> dict:
    """PML's examples' ``get_all_embeddings``: ``testers.BaseTester().get_all_embeddings(dataset, model)``."""
    from pytorch_metric_learning import testers

    model.to(device)
    tester = testers.BaseTester(batch_size=args.usual_embed_batch_size, dataloader_num_workers=args.workers,
                                data_device=device)
    with torch.no_grad():
        model.eval()(torch.randn(8, 1, 28, 28, device=device))  # warm-up
    with Phase(device) as phase, contextlib.redirect_stderr(io.StringIO()):  # PML's tester draws a progress bar
        embeddings, _ = tester.get_all_embeddings(usual_test, model)
    return phase.row(images=len(embeddings), images_per_s=len(embeddings) / phase.seconds,
                     batch_size=args.usual_embed_batch_size, workers=args.workers)


@torch.inference_mode()
def device_embed(model, images, batch_size: int, amp=None) -> torch.Tensor:
    """Embeddings (N, D) of device-resident ``images`` in batches, under autocast to ``amp`` if given."""
    model.eval()
    with torch.autocast(images.device.type, dtype=amp, enabled=amp is not None):
        return torch.cat([model(batch).float() for batch in images.split(batch_size)])


def time_device_embed(model, test_set, args, device, batch_size: int = 4096) -> dict:
    """course_device: the test images on the device, ``models.for_inference``'s network, autocast, large batches."""
    model = models.for_inference(model, device)
    images = test_set.tensors[0].to(device)
    device_embed(model, images[:batch_size], batch_size, amp_dtype(args))  # warm-up
    with Phase(device) as phase:
        embeddings = device_embed(model, images, batch_size, amp_dtype(args)).cpu()
    return phase.row(images=len(embeddings), images_per_s=len(embeddings) / phase.seconds, batch_size=batch_size,
                     amp=args.amp, channels_last=True)


def time_model_only_embed(model, device, batch_size: int = 512) -> dict:
    """``models.for_inference``'s forward pass alone on one resident batch of 512 (the course's batch): the ceiling
    of ``evaluation.embed``."""
    model = models.for_inference(model, device)
    images = torch.randn(batch_size, 1, 28, 28, device=device)
    with torch.inference_mode():
        seconds = best_seconds(lambda: model(images), device, repeats=3)
    return {"images": batch_size, "seconds": seconds, "images_per_s": batch_size / seconds, "batch_size": batch_size}


def embedding_part(sets, args, device, flops, peak) -> dict:
    """All embedding rows for one model, and the speedups over the usual pipeline."""
    model = new_model(args.seed)
    rows = {"course": time_course_embed(model, sets["course"][1], device),
            "usual": time_usual_embed(model, sets["usual"][1], args, device),
            "model_only": time_model_only_embed(model, device)}
    if args.device_variants:
        rows["course_device"] = time_device_embed(copy.deepcopy(model), sets["course"][1], args, device)
    for row in rows.values():
        add_compute(row, flops["forward_per_image"], peak, bf16=row.get("amp") == "bf16")
    out = dict(rows, speedup=rows["course"]["images_per_s"] / rows["usual"]["images_per_s"])
    if "course_device" in rows:
        out["speedup_device"] = rows["course_device"]["images_per_s"] / rows["usual"]["images_per_s"]
    return out


# ---------------------------------------------------------------- retrieval at scale

def synthetic_embeddings(n: int, dim: int, class_size: int, seed: int, device):
    """Gaussian classes of ``class_size`` samples: embeddings (n, dim) float32 and labels (n,) on ``device``."""
    gen = torch.Generator(device=device).manual_seed(seed)
    classes = max(1, n // class_size)
    labels = torch.arange(n, device=device) % classes
    centres = torch.randn(classes, dim, generator=gen, device=device) * 0.35
    x = torch.randn(n, dim, generator=gen, device=device)
    for start in range(0, n, 1 << 16):  # in slices: no second (n, dim) array
        x[start:start + (1 << 16)] += centres[labels[start:start + (1 << 16)]]
    return x, labels


def time_retrieval(n: int, args, device) -> list:
    """Rows for one size: the chunked path, and PML's AccuracyCalculator (CPU) when n <= ``--pml-max-size``."""
    x, labels = synthetic_embeddings(n, args.retrieval_dim, args.retrieval_class_size, args.seed, device)
    use_faiss = evaluation.has_faiss() and device.type == "cpu"
    k = int(torch.bincount(labels).max()) - 1
    chunk = args.retrieval_chunk or evaluation.default_chunk_size(
        n, k, use_faiss, evaluation.CHUNK_BYTES if device.type == "cpu" else GPU_CHUNK_BYTES)
    base = {"n": n, "dim": args.retrieval_dim, "classes": max(1, n // args.retrieval_class_size), "k": k,
            "distance": args.retrieval_distance}
    with Phase(device) as phase:
        metrics = evaluation.chunked_retrieval_metrics(x, labels, args.retrieval_distance, chunk, use_faiss)
    rows = [phase.row(**base, method="chunked", backend="faiss" if use_faiss else f"torch-{device.type}",
                      chunk_size=chunk, data_mb=round(x.numel() * 4 / 2**20, 1), metrics=metrics)]
    if n <= args.pml_max_size:  # on the CPU, also for GPU results: the check that they are PML's
        rows.append(time_pml_retrieval(x.cpu(), labels.cpu(), args, base, metrics))
    return rows


def time_pml_retrieval(x, labels, args, base: dict, chunked: dict) -> dict:
    """PML's AccuracyCalculator (the course's former path) on the same vectors, and its largest metric gap."""
    calculator = evaluation.accuracy_calculator()
    with Phase(x.device) as phase:
        metrics = evaluation.retrieval_metrics(x, labels, args.retrieval_distance, calculator=calculator)
    gap = max(abs(metrics[m] - chunked[m]) for m in evaluation.METRICS)
    return phase.row(**base, method="pml", backend="faiss" if evaluation.has_faiss() else "torch-cpu",
                     metrics=metrics, max_abs_difference_from_chunked=gap)


def retrieval_part(args, device, results: dict) -> None:
    """Time every size in ``--retrieval-sizes``, writing the JSON after each (large sizes may be cut short)."""
    for n in args.retrieval_sizes:
        results["retrieval"].extend(guarded_rows(time_retrieval, n, args, device))
        write_json(results, args.out)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def guarded_rows(fn, n, args, device) -> list:
    rows = guarded(fn, n, args, device)
    return [dict(rows, n=n)] if isinstance(rows, dict) else rows


# ---------------------------------------------------------------- the report

def targets(results: dict, device) -> dict:
    """Each target of issue 8 for this device: ``{name: {"target", "measured", "met"}}``."""
    out = {}
    for name, target in TARGETS.get(device.type, {}).items():
        part, _, variant = name.partition("_")
        key = "speedup_" + variant if variant else "speedup"
        measured = results.get(part, {}).get(key)
        if measured is not None:
            out[name] = {"target": target, "measured": round(measured, 3), "met": measured >= target}
    return out


def table(results: dict) -> str:
    """The results as text: one line per pipeline and part, then retrieval, then targets."""
    lines = [f"{'part':<10} {'pipeline':<26} {'images/s':>10} {'x usual':>8} {'seconds':>8} {'peak MB':>9} "
             f"{'GFLOP/s':>8} {'% conv pk':>9}"]
    for part in ("training", "embedding"):
        rows = results.get(part, {})
        usual = rows.get("usual", {}).get("images_per_s") if isinstance(rows.get("usual"), dict) else None
        lines += [_pipeline_line(part, name, row, usual) for name, row in rows.items() if isinstance(row, dict)]
        if "error" in rows:
            lines.append(f"{part:<10} failed: {rows['error']}")
    lines += [_retrieval_line(row) for row in results.get("retrieval", [])]
    for name, t in results.get("targets", {}).items():
        lines.append(f"target     {name:<26} {t['measured']:.2f}x (target {t['target']}x): "
                     f"{'met' if t['met'] else 'NOT met'}")
    return "\n".join(lines)


def _pipeline_line(part: str, name: str, row: dict, usual) -> str:
    if name == "loaders_only":
        return "\n".join(f"{part:<10} {'loader only: ' + loader:<26} {r['images_per_s']:>10.0f}"
                         for loader, r in row.items() if "images_per_s" in r)
    if "images_per_s" not in row:
        return f"{part:<10} {name:<26} {row.get('error', '')}"
    ratio = row["images_per_s"] / usual if usual else float("nan")
    peak = row.get("peak_cuda_mb", row.get("peak_rss_mb", float("nan")))
    return (f"{part:<10} {name:<26} {row['images_per_s']:>10.0f} {ratio:>8.2f} {row['seconds']:>8.2f} {peak:>9.0f} "
            f"{row.get('gflops', 0):>8.1f} {100 * row.get('fraction_of_conv_peak', 0):>9.1f}")


def _retrieval_line(row: dict) -> str:
    peak = row.get("peak_cuda_mb", row.get("peak_rss_mb", float("nan")))
    return (f"retrieval  {row.get('method', '?'):<8} n={row['n']:<9} k={row.get('k', '?'):<5} "
            f"{row.get('backend', ''):<11} {row.get('seconds', float('nan')):8.2f} s {peak:9.0f} MB "
            f"{row.get('error', '')}")


def run(args) -> dict:
    """Every part that is not skipped, in order; the JSON is rewritten after each part."""
    device = configure(args)
    results = {"meta": machine_info(device, args) | {"start_rss_mb": round(_status_mb("VmRSS"), 1)},
               "flops": model_flops(batch_size=4), "peaks": {}, "training": {}, "embedding": {}, "retrieval": [],
               "targets": {}}
    write_json(results, args.out)
    if not args.skip_peaks:
        results["peaks"] = peaks(device, args)
        write_json(results, args.out)
    if not (args.skip_training and args.skip_embedding):
        with tempfile.TemporaryDirectory() as workdir:
            sets = {"course": course_sets(args.train_images, args.test_images),
                    "usual": usual_sets(args.train_images, args.test_images, workdir)}
            for part, fn in (("training", training_part), ("embedding", embedding_part)):
                if not getattr(args, f"skip_{part}"):
                    results[part] = guarded(fn, sets, args, device, results["flops"], results["peaks"])
                    results["targets"] = targets(results, device)
                    write_json(results, args.out)
            if args.compile == "on" and args.device_variants and "course" in results["training"]:
                compiled_part(sets, args, device, results)
                results["targets"] = targets(results, device)
                write_json(results, args.out)
            del sets  # the images' memory is not the retrieval's
    if not args.skip_retrieval:
        retrieval_part(args, device, results)
    return results


def main(argv=None) -> dict:
    """Run the benchmark, print the table, write the JSON; returns the results."""
    args = parse_args(argv)
    results = run(args)
    print(table(results))
    print(f"written: {args.out}")
    return results


if __name__ == "__main__":
    main()
