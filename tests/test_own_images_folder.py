"""Lesson 10's image folders: splits keep classes (or images) apart; bad folders get clear errors."""
from pathlib import Path

import numpy as np
import pytest
import torch
from own_images_folders import write_folder
from PIL import Image

from course_utils import data
from course_utils.own_images import folder


def paths(scan):
    return {path for path, _ in scan.samples}


def test_split_by_class_keeps_classes_apart(tmp_path):
    found = folder.scan(write_folder(tmp_path, classes=6, per_class=3))
    train, test = folder.split_by_class(found, test_fraction=0.5, seed=0)
    assert len(train.classes) == len(test.classes) == 3 and not set(train.classes) & set(test.classes)
    assert paths(train) | paths(test) == paths(found) and not paths(train) & paths(test)
    for part in (train, test):  # labels renumbered 0..2, each still naming the folder the image is in
        assert {label for _, label in part.samples} == {0, 1, 2}
        assert all(Path(path).parent.name == part.classes[label] for path, label in part.samples)


def test_split_by_class_is_seeded(tmp_path):
    found = folder.scan(write_folder(tmp_path, classes=6, per_class=2))
    test_classes = [tuple(folder.split_by_class(found, seed=seed)[1].classes) for seed in range(6)]
    assert test_classes[0] == tuple(folder.split_by_class(found, seed=0)[1].classes)
    assert len(set(test_classes)) > 1


def test_first_classes_split_tests_on_the_last_classes_by_name(tmp_path):
    split = folder.load_split(write_folder(tmp_path, classes=6, per_class=2), split="first-classes")
    assert (split.train.classes, split.test.classes) == (["c0", "c1", "c2"], ["c3", "c4", "c5"])


def test_test_fraction_sets_the_number_of_test_classes(tmp_path):
    found = folder.scan(write_folder(tmp_path, classes=10, per_class=2))
    train, test = folder.split_by_class(found, test_fraction=0.2)
    assert (len(train.classes), len(test.classes)) == (8, 2)


def test_split_by_image_keeps_images_apart(tmp_path):
    found = folder.scan(write_folder(tmp_path, classes=3, per_class=6))
    train, test = folder.split_by_image(found, test_fraction=0.5, seed=0)
    assert train.classes == test.classes == found.classes
    assert paths(train) | paths(test) == paths(found) and not paths(train) & paths(test)
    assert torch.bincount(torch.tensor([label for _, label in test.samples])).tolist() == [3, 3, 3]


def class_folder_without_images(root):
    (root / "cat").mkdir()
    (root / "cat" / "notes.txt").write_text("no images here")
    return root


@pytest.mark.parametrize("make, message", [
    (lambda root: root / "missing", "is not a folder"),
    (lambda root: root, "no class sub-folders"),
    (class_folder_without_images, "no readable images"),
])
def test_empty_folders_are_refused(tmp_path, make, message):
    with pytest.raises(folder.FolderError, match=message):
        folder.scan(make(tmp_path))


def test_a_class_with_one_image_is_refused(tmp_path):
    root = write_folder(tmp_path, classes=4, per_class=3)
    for path in sorted((root / "c2").iterdir())[1:]:
        path.unlink()
    with pytest.raises(folder.FolderError, match=r"positive pair.*c2 \(1\)"):
        folder.load_split(root)


def test_too_few_classes_for_a_class_split(tmp_path):
    with pytest.raises(folder.FolderError, match="at least 2"):
        folder.load_split(write_folder(tmp_path, classes=3, per_class=2))


def test_too_few_images_for_an_image_split(tmp_path):
    with pytest.raises(folder.FolderError, match="at least 4"):
        folder.load_split(write_folder(tmp_path, classes=3, per_class=3), split="image")


def test_unreadable_files_are_skipped_and_listed(tmp_path):
    root = write_folder(tmp_path, classes=4, per_class=3)
    (root / "c1" / "broken.jpg").write_bytes(b"not an image")
    good = (root / "c1" / "0.png").read_bytes()
    (root / "c1" / "truncated.png").write_bytes(good[: len(good) // 2])
    split = folder.load_split(root)
    skipped = sorted(Path(path).name for path, _ in split.skipped)
    assert skipped == ["broken.jpg", "truncated.png"]
    assert len(split.train) + len(split.test) == 12
    assert "skipped" in folder.describe(split) and "broken.jpg" in folder.describe(split)


def test_grayscale_and_transparent_images_become_rgb(tmp_path):
    root = write_folder(tmp_path, classes=4, per_class=2)
    Image.new("L", (20, 12), 90).save(root / "c0" / "grey.png")
    Image.new("RGBA", (12, 20), (255, 0, 0, 0)).save(root / "c0" / "transparent.png")
    Image.new("P", (16, 16)).save(root / "c0" / "palette.gif")
    assert folder.open_rgb(root / "c0" / "grey.png").getpixel((0, 0)) == (90, 90, 90)
    assert folder.open_rgb(root / "c0" / "transparent.png").getpixel((0, 0)) == (255, 255, 255)
    images = folder.ImageList(folder.scan(root), folder.transform(size=24, train=True))
    assert {tuple(images[i][0].shape) for i in range(len(images))} == {(3, 24, 24)}


def test_unknown_split_is_refused(tmp_path):
    with pytest.raises(ValueError, match="split must be"):
        folder.load_split(write_folder(tmp_path, classes=4, per_class=2), split="random")


def test_fashion_mnist_is_written_as_a_png_folder(tmp_path):
    root = folder.write_fashion_mnist(tmp_path / "fm", per_class=2)
    found = folder.scan(root)
    assert len(found.classes) == 10 and len(found.samples) == 20 and "T-shirt-top" in found.classes
    images, labels = data.subsample(data.load_fashion_mnist("train"), 2, seed=0).tensors
    first = Image.open(root / data.CLASS_NAMES[int(labels[0])].replace("/", "-") / "00000.png")
    expected = (data.denormalize(images[0, 0]) * 255).round()
    assert first.mode == "L" and torch.equal(torch.from_numpy(np.array(first)).float(), expected)


def test_evaluation_transform_is_that_of_the_default_resnet50_weights():
    import torchvision
    weights = torchvision.models.ResNet50_Weights.DEFAULT.transforms()  # sizes only: no download
    steps = folder.transform(224).transforms
    assert steps[0].size == weights.resize_size[0] and steps[1].size == (weights.crop_size[0],) * 2
