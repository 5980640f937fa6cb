"""Fashion-MNIST, read offline from the IDX files in ``data/``, and the class splits of metric learning (lesson 00)."""
import gzip
import hashlib
import os
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from . import paths

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
SEEN_CLASSES = (0, 1, 2, 3, 4)  # trained on
UNSEEN_CLASSES = (5, 6, 7, 8, 9)  # held out: only ever used for evaluation
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
MEAN, STD = 0.2860, 0.3530  # pixel statistics of the 60,000 training images, in [0, 1]
CHECKSUMS = "checksums.sha256"
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataFileError(RuntimeError):
    """A data file is missing or does not match its checksum."""


def default_root() -> Path:
    """``$COURSE_DATA`` if set, else the course's ``data/fashion_mnist`` (see ``paths.course_root``)."""
    env = os.environ.get("COURSE_DATA")
    return Path(env) if env else paths.data_dir()


def _fix_hint(root: Path) -> str:
    return (f"Restore it with `git checkout -- {root}` from the course repository, or, if you are "
            f"online, download the originals with `course_utils.data.download()`.")


def read_checksums(root=None) -> dict:
    """``{file name: SHA-256 of its decompressed bytes}`` from ``checksums.sha256``."""
    root = Path(root or default_root())
    path = root / CHECKSUMS
    if not path.is_file():
        raise DataFileError(f"Checksum file {path} is missing. {_fix_hint(root)}")
    pairs = (line.split() for line in path.read_text().splitlines() if line.strip())
    return {name: digest for digest, name in pairs}


def _gunzip_blocks(path):
    """The decompressed bytes of a gzip file, block by block; ``DataFileError`` if it is missing or damaged."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"Data file {path} is missing. {_fix_hint(path.parent)}")
    try:
        with gzip.open(path, "rb") as f:
            yield from iter(lambda: f.read(1 << 20), b"")
    except (OSError, EOFError, zlib.error) as err:  # truncated, flipped bytes, bad CRC, not gzip at all
        raise DataFileError(f"Data file {path} is damaged ({type(err).__name__}: {err}). "
                            f"{_fix_hint(path.parent)}") from err


def idx_sha256(path) -> str:
    """SHA-256 of a gzip file's decompressed content."""
    digest = hashlib.sha256()
    for block in _gunzip_blocks(path):
        digest.update(block)
    return digest.hexdigest()


def verify(root=None) -> None:
    """Check that every data file exists and matches its checksum; raise ``DataFileError`` naming the file if not."""
    root = Path(root or default_root())
    for name, expected in read_checksums(root).items():
        path = root / name
        actual = idx_sha256(path)
        if actual != expected:
            raise DataFileError(f"Data file {path} does not match its checksum "
                                f"(expected {expected[:12]}…, got {actual[:12]}…). {_fix_hint(root)}")


def read_idx(path) -> torch.Tensor:
    """Read a gzip-compressed IDX file (the MNIST format) into a tensor of its stored shape and type."""
    raw = b"".join(_gunzip_blocks(path))
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataFileError(f"{path} is not an IDX file (bad magic number).")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    data = np.frombuffer(raw, _IDX_DTYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DataFileError(f"{path} holds {data.size} values but its header says {shape}.")
    return torch.from_numpy(data.astype(data.dtype.newbyteorder("="), copy=True).reshape(shape))


def load_fashion_mnist(split: str = "train", root=None, check: bool = True) -> TensorDataset:
    """The standard split as a TensorDataset of normalised images (N, 1, 28, 28) and labels (N,)."""
    if split not in FILES:
        raise ValueError(f"split must be one of {sorted(FILES)}, not {split!r}")
    root = Path(root or default_root())
    if check:
        verify(root)
    image_file, label_file = FILES[split]
    images = read_idx(root / image_file).unsqueeze(1).float().div_(255)
    labels = read_idx(root / label_file).long()
    return TensorDataset(images.sub_(MEAN).div_(STD), labels)


@lru_cache(maxsize=2)
def fashion_mnist(split: str) -> TensorDataset:
    """``load_fashion_mnist(split)`` from the default folder, read once per process (the lessons split it often)."""
    return load_fashion_mnist(split)


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """Undo ``load_fashion_mnist``'s normalisation: back to pixel values in [0, 1]."""
    return (images * STD + MEAN).clamp(0, 1)


def select_classes(dataset: TensorDataset, classes) -> TensorDataset:
    """The samples of ``dataset`` whose label is in ``classes``, labels unchanged."""
    images, labels = dataset.tensors
    keep = torch.isin(labels, torch.as_tensor(list(classes), dtype=labels.dtype))
    return TensorDataset(images[keep], labels[keep])


def seen_unseen(dataset: TensorDataset, seen=SEEN_CLASSES, unseen=UNSEEN_CLASSES):
    """Split by class, the metric-learning protocol: (samples of seen classes, samples of unseen classes)."""
    if set(seen) & set(unseen):
        raise ValueError(f"seen and unseen classes overlap: {sorted(set(seen) & set(unseen))}")
    return select_classes(dataset, seen), select_classes(dataset, unseen)


def subsample(dataset: TensorDataset, per_class: int, seed: int = 0) -> TensorDataset:
    """A class-balanced random subset: at most ``per_class`` samples of each class."""
    images, labels = dataset.tensors
    gen = torch.Generator().manual_seed(seed)
    picks = []
    for c in labels.unique():
        idx = (labels == c).nonzero().squeeze(1)
        picks.append(idx[torch.randperm(len(idx), generator=gen)[:per_class]])
    keep = torch.cat(picks).sort().values
    return TensorDataset(images[keep], labels[keep])


def download(root=None, mirror=None, resources=None) -> Path:
    """Download the four original files with torchvision's downloader, then verify them. Needs the internet."""
    from torchvision.datasets import FashionMNIST
    from torchvision.datasets.utils import download_url

    root = Path(root or default_root())
    mirror = mirror or FashionMNIST.mirrors[0]
    for filename, md5 in resources or FashionMNIST.resources:
        if not (root / filename).is_file():
            download_url(mirror + filename, root=str(root), filename=filename, md5=md5)
    verify(root)
    return root


def make_loader(dataset: Dataset, batch_size: int, seed: int, shuffle: bool = True, sampler=None) -> DataLoader:
    """Batches of ``dataset`` whose shuffling is seeded, so a rerun sees the same batches (lesson 01).

    With a ``sampler`` (lesson 06), the sampler decides the order and the loader does not shuffle."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None,
                      sampler=sampler, generator=generator, drop_last=True)


def split_per_class(dataset: TensorDataset, sizes, seed: int = 0) -> list:
    """Disjoint class-balanced random subsets, ``sizes[i]`` samples of each class in the i-th.

    The first subset is exactly ``subsample(dataset, sizes[0], seed)``: adding a validation subset after it
    leaves the training images unchanged."""
    images, labels = dataset.tensors
    gen = torch.Generator().manual_seed(seed)
    picks = [[] for _ in sizes]
    for c in labels.unique():
        idx = (labels == c).nonzero().squeeze(1)
        order, start = idx[torch.randperm(len(idx), generator=gen)], 0
        for pick, size in zip(picks, sizes):
            pick.append(order[start:start + size])
            start += size
    keeps = [torch.cat(pick).sort().values for pick in picks]
    return [TensorDataset(images[keep], labels[keep]) for keep in keeps]
