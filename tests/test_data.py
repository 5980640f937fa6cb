import functools
import gzip
import hashlib
import http.server
import re
import shutil
import threading
import zlib

import numpy as np
import pytest
import torch

from course_utils import data


def test_read_idx_matches_written_array(tiny_fashion):
    root, arrays = tiny_fashion
    for name, array in arrays.items():
        tensor = data.read_idx(root / name)
        assert tensor.dtype == torch.uint8
        assert np.array_equal(tensor.numpy(), array)


def test_read_idx_rejects_non_idx(tmp_path):
    path = tmp_path / "bad.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"hello world")
    with pytest.raises(data.DataFileError, match="bad.gz"):
        data.read_idx(path)


def test_load_normalises_like_naive_loop(tiny_fashion):
    root, arrays = tiny_fashion
    images, labels = data.load_fashion_mnist("train", root).tensors
    assert images.shape == (20, 1, 28, 28) and labels.dtype == torch.long
    raw = arrays[data.FILES["train"][0]]
    pixel = (raw[3, 5, 7] / 255 - data.MEAN) / data.STD
    assert images[3, 0, 5, 7].item() == pytest.approx(pixel, abs=1e-6)
    assert torch.allclose(data.denormalize(images)[:, 0], torch.from_numpy(raw / 255).float(), atol=1e-6)


def test_real_data_is_fashion_mnist():
    train, test = data.load_fashion_mnist("train"), data.load_fashion_mnist("test")
    assert len(train) == 60_000 and len(test) == 10_000
    assert torch.bincount(train.tensors[1]).tolist() == [6000] * 10
    pixels = data.denormalize(train.tensors[0])
    assert pixels.mean().item() == pytest.approx(data.MEAN, abs=1e-3)
    assert pixels.std().item() == pytest.approx(data.STD, abs=1e-3)
    assert len(data.CLASS_NAMES) == 10


def test_unknown_split():
    with pytest.raises(ValueError, match="split"):
        data.load_fashion_mnist("validation")


def test_missing_file_is_named(tiny_fashion):
    root, _ = tiny_fashion
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(data.DataFileError, match=r"t10k-labels-idx1-ubyte\.gz is missing.*git checkout"):
        data.load_fashion_mnist("train", root)


def test_corrupted_file_is_named(tiny_fashion):
    root, _ = tiny_fashion
    path = root / "train-images-idx3-ubyte.gz"
    content = bytearray(gzip.decompress(path.read_bytes()))
    content[100] ^= 0xFF
    path.write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(data.DataFileError, match=r"train-images-idx3-ubyte\.gz does not match its checksum"):
        data.verify(root)


def test_truncated_gzip_is_named(tiny_fashion):
    root, _ = tiny_fashion
    path = root / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(data.DataFileError, match=r"train-images-idx3-ubyte\.gz is damaged"):
        data.verify(root)


def middle_of_deflate_stream(gz: bytes) -> int:
    """The middle of a gzip file's compressed data: after the 10-byte header and its zero-ended file name
    (present when the FNAME flag, 0x08, is set), before the 8-byte trailer (RFC 1952)."""
    start = gz.index(b"\0", 10) + 1 if gz[3] & 0x08 else 10
    return (start + len(gz) - 8) // 2


def test_flipped_compressed_byte_is_named(tiny_fashion):
    """A byte flipped inside the compressed stream: gzip itself raises zlib.error or BadGzipFile (the oracle);
    verify and read_idx raise DataFileError naming the file and the fix instead."""
    root, arrays = tiny_fashion
    raised = set()
    for name in arrays:
        path = root / name
        original = path.read_bytes()
        flipped = bytearray(original)
        flipped[middle_of_deflate_stream(original)] ^= 0xFF
        path.write_bytes(bytes(flipped))
        with pytest.raises((zlib.error, gzip.BadGzipFile)) as raw:
            gzip.decompress(bytes(flipped))
        raised.add(raw.type)
        message = rf"{re.escape(name)} is damaged \({raw.type.__name__}: .*git checkout"
        with pytest.raises(data.DataFileError, match=message):
            data.verify(root)
        with pytest.raises(data.DataFileError, match=message):
            data.read_idx(path)
        path.write_bytes(original)
    assert raised == {zlib.error, gzip.BadGzipFile}  # zlib.error used to escape as a raw traceback


def test_read_idx_names_a_missing_file(tmp_path):
    with pytest.raises(data.DataFileError, match=r"nothing\.gz is missing"):
        data.read_idx(tmp_path / "nothing.gz")


def test_course_data_overrides_the_course_root(tiny_fashion, tmp_path_factory, monkeypatch):
    root, _ = tiny_fashion
    monkeypatch.setenv("COURSE_ROOT", str(tmp_path_factory.mktemp("not_a_course")))
    monkeypatch.setenv("COURSE_DATA", str(root))
    assert data.default_root() == root and len(data.load_fashion_mnist("test")) == 10


def test_seen_unseen_is_a_partition(tiny_fashion):
    root, _ = tiny_fashion
    train = data.load_fashion_mnist("train", root)
    seen, unseen = data.seen_unseen(train)
    assert set(seen.tensors[1].tolist()) == set(data.SEEN_CLASSES)
    assert set(unseen.tensors[1].tolist()) == set(data.UNSEEN_CLASSES)
    assert len(seen) + len(unseen) == len(train)
    with pytest.raises(ValueError, match="overlap"):
        data.seen_unseen(train, seen=(0, 1), unseen=(1, 2))


def test_subsample_is_balanced_and_seeded(tiny_fashion):
    root, _ = tiny_fashion
    train = data.load_fashion_mnist("train", root)
    small = data.subsample(train, per_class=1, seed=1)
    assert sorted(small.tensors[1].tolist()) == list(range(10))
    assert torch.equal(small.tensors[0], data.subsample(train, 1, seed=1).tensors[0])


@pytest.fixture
def mirror(tiny_fashion, tmp_path_factory):
    """The made-up files served over HTTP on localhost, standing in for the online mirror."""
    source, _ = tiny_fashion
    folder = tmp_path_factory.mktemp("mirror")
    for name in [n for pair in data.FILES.values() for n in pair]:
        shutil.copy(source / name, folder / name)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_download_from_a_mirror_offline(tiny_fashion, mirror, tmp_path_factory):
    """The download path, pointed at a local mirror made by the test: no internet needed."""
    source, _ = tiny_fashion
    folder, url = mirror
    target = tmp_path_factory.mktemp("target")
    shutil.copy(source / data.CHECKSUMS, target / data.CHECKSUMS)
    resources = [(p.name, hashlib.md5(p.read_bytes()).hexdigest()) for p in sorted(folder.iterdir())]
    root = data.download(target, mirror=url, resources=resources)
    assert len(data.load_fashion_mnist("test", root)) == 10


def test_download_rejects_a_bad_mirror(mirror, tmp_path_factory):
    _, url = mirror
    target = tmp_path_factory.mktemp("target")
    with pytest.raises(RuntimeError, match="not found or corrupted"):
        data.download(target, mirror=url, resources=[(data.FILES["train"][0], "0" * 32)])


def test_split_per_class_is_disjoint_and_extends_subsample():
    images = torch.arange(60).float()[:, None]
    labels = torch.arange(60) % 3
    dataset = torch.utils.data.TensorDataset(images, labels)
    first, second = data.split_per_class(dataset, (5, 4), seed=7)
    assert torch.equal(first.tensors[0], data.subsample(dataset, 5, seed=7).tensors[0])
    assert torch.bincount(second.tensors[1]).tolist() == [4, 4, 4]
    assert not set(first.tensors[0].flatten().tolist()) & set(second.tensors[0].flatten().tolist())
