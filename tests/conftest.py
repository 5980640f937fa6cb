import gzip
import os
import struct

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
os.environ.setdefault("COURSE_OFFLINE", "1")  # no test downloads weights (lesson 10's notebook included)


def write_idx(path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzip-compressed IDX file, the naive way: header with struct, then bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def tiny_fashion(tmp_path):
    """A made-up data directory in the layout of data/fashion_mnist: 20 train and 10 test images."""
    from course_utils import data

    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 20), ("test", 10)):
        image_file, label_file = data.FILES[split]
        arrays[image_file] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[label_file] = (np.arange(n) % 10).astype(np.uint8)
    for name, array in arrays.items():
        write_idx(tmp_path / name, array)
    lines = [f"{data.idx_sha256(tmp_path / name)}  {name}" for name in arrays]
    (tmp_path / data.CHECKSUMS).write_text("\n".join(lines) + "\n")
    return tmp_path, arrays
