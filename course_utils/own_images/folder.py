"""A folder of images, one sub-folder per class (torchvision's ImageFolder layout), split by class or by
image and preprocessed the ImageNet way (lesson 10).

    my_photos/
        cat/001.jpg, cat/002.png, ...
        dog/a.jpg, ...
"""
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import transforms as T
from torchvision.datasets.folder import IMG_EXTENSIONS

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SPLITS = ("class", "first-classes", "image")


class FolderError(ValueError):
    """The folder cannot be used for metric learning; the message says why and what to do."""


@dataclass
class Scan:
    """What ``scan`` found: class names, ``(path, label)`` samples, and ``(path, reason)`` files it skipped."""

    classes: list
    samples: list
    skipped: list = field(default_factory=list)


def class_folders(root) -> list:
    """The class sub-folders of ``root``, sorted by name; a ``FolderError`` if there are none."""
    root = Path(root)
    if not root.is_dir():
        raise FolderError(f"{root} is not a folder. Give a folder with one sub-folder of images per class.")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise FolderError(f"{root} has no class sub-folders. Put the images of each class in a sub-folder "
                          f"named after the class, e.g. {root}/cat/001.jpg and {root}/dog/001.jpg.")
    return folders


def unreadable(path) -> str | None:
    """Why PIL cannot read the image at ``path``, or None if it can."""
    try:
        with Image.open(path) as image:
            image.verify()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        return f"{type(err).__name__}: {err}"
    return None


def scan(root, verify: bool = True, skip=()) -> Scan:
    """Every readable image of every class folder. Unreadable files are skipped and listed, not fatal.
    ``verify=False`` opens no file (fast on a network drive: a resumed run trusts its first scan) and skips the
    paths in ``skip``, the files an earlier scan found unreadable."""
    classes, samples, skipped, skip = [], [], [], set(skip)
    for folder in class_folders(root):
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)
        reasons = {p: unreadable(p) if verify else ("unreadable at the first scan" if str(p) in skip else None)
                   for p in files}
        skipped += [(str(p), why) for p, why in reasons.items() if why]
        samples += [(str(p), len(classes)) for p, why in reasons.items() if not why]
        classes.append(folder.name)
    if not samples:
        raise FolderError(f"{root} holds no readable images (extensions read: {', '.join(IMG_EXTENSIONS)}).")
    return Scan(classes, samples, skipped)


def image_files(paths) -> list:
    """The image files (by extension, not opened: fast on a network drive) of ``paths``, each a file or a folder
    searched recursively, as sorted strings; a ``FolderError`` if there are none."""
    files = []
    for path in map(Path, paths):
        found = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        files += [str(p) for p in found if p.suffix.lower() in IMG_EXTENSIONS]
    if not files:
        raise FolderError(f"No image files in {', '.join(map(str, paths))} (extensions read: "
                          f"{', '.join(IMG_EXTENSIONS)}).")
    return files


def require_images_per_class(found: Scan, minimum: int = 2, why: str = "to form a positive pair") -> None:
    """A ``FolderError`` naming every class with fewer than ``minimum`` readable images."""
    counts = torch.bincount(torch.tensor([label for _, label in found.samples]), minlength=len(found.classes))
    small = [f"{found.classes[c]} ({int(n)})" for c, n in enumerate(counts) if n < minimum]
    if small:
        raise FolderError(f"Every class needs at least {minimum} readable images {why}; these have fewer: "
                          f"{', '.join(small)}. Add images or remove those folders.")


def split_by_class(found: Scan, test_fraction: float = 0.5, seed: int = 0, shuffle: bool = True):
    """Disjoint train and test *classes* (the metric-learning protocol): two Scans, labels renumbered 0..
    ``shuffle=False``: the first classes by name train, the last ones test (CUB-200's 100 + 100)."""
    require_images_per_class(found)
    n_test = round(len(found.classes) * test_fraction)
    if n_test < 2 or len(found.classes) - n_test < 2:
        raise FolderError(f"{len(found.classes)} classes with test_fraction={test_fraction} leave {n_test} test "
                          f"and {len(found.classes) - n_test} training classes; each side needs at least 2.")
    order = list(range(len(found.classes)))
    if shuffle:
        random.Random(seed).shuffle(order)
    n_train = len(order) - n_test
    return subset(found, sorted(order[:n_train])), subset(found, sorted(order[n_train:]))


def subset(found: Scan, class_ids) -> Scan:
    """The samples of some classes, relabelled 0..len(class_ids)-1 in the given order."""
    new_label = {c: i for i, c in enumerate(class_ids)}
    samples = [(path, new_label[label]) for path, label in found.samples if label in new_label]
    return Scan([found.classes[c] for c in class_ids], samples)


def split_by_image(found: Scan, test_fraction: float = 0.5, seed: int = 0):
    """The same classes on both sides, each class's images split at random: two Scans."""
    require_images_per_class(found, 4, "to keep 2 for training and 2 held out (or set the held-out fraction to 0)")
    rng = random.Random(seed)
    train, test = [], []
    for c in range(len(found.classes)):
        paths = [s for s in found.samples if s[1] == c]
        rng.shuffle(paths)
        n_test = min(max(2, round(len(paths) * test_fraction)), len(paths) - 2)
        test, train = test + paths[:n_test], train + paths[n_test:]
    return Scan(found.classes, sorted(train)), Scan(found.classes, sorted(test))


EVAL_RESIZE = 232 / 224  # ResNet50_Weights.DEFAULT (IMAGENET1K_V2): resize the short side to 232, crop 224


def transform(size: int = 224, train: bool = False, scale=(0.25, 1.0), resize: float = EVAL_RESIZE):
    """ImageNet preprocessing to (3, size, size): random crop and flip for training; otherwise the evaluation
    transform of the trunk's weights (``weights.transforms()``; ``network.eval_resize``), scaled to ``size``:
    short side to ``resize * size``, centre crop ``size`` (ResNet-50's V2 weights: 232 and 224)."""
    if train:
        steps = [T.RandomResizedCrop(size, scale=scale, antialias=True), T.RandomHorizontalFlip()]
    else:
        steps = [T.Resize(round(size * resize), antialias=True), T.CenterCrop(size)]
    return T.Compose(steps + [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def open_rgb(path) -> Image.Image:
    """The image at ``path`` as RGB: greyscale is repeated, transparency is put on a white background."""
    with Image.open(path) as image:
        image.load()
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        white = Image.new("RGBA", image.size, "white")
        return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


class ImageList(Dataset):
    """Images read from paths: ``dataset[i]`` is (image tensor (3, size, size), label)."""

    def __init__(self, found: Scan, transform):
        self.classes = list(found.classes)
        self.paths = [path for path, _ in found.samples]
        self.labels = torch.tensor([label for _, label in found.samples], dtype=torch.long)
        self.transform = transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.transform(open_rgb(self.paths[i])), int(self.labels[i])

    def with_transform(self, transform) -> "ImageList":
        """The same images with another preprocessing (e.g. the evaluation one for the training images)."""
        return ImageList(Scan(self.classes, list(zip(self.paths, self.labels.tolist()))), transform)


@dataclass
class Split:
    """Training images (random crops), test images (centre crops; None for a final fit on every class), the files
    the scan skipped, and validation images: held-out images of the training classes (None without them)."""

    train: ImageList
    test: ImageList | None
    skipped: list
    valid: ImageList | None = None


def split_scan(found: Scan, split: str, test_fraction: float, seed: int) -> tuple:
    """(train, test) Scans of ``split``; test is None when ``test_fraction`` is 0 (train on every class)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    if test_fraction == 0:
        require_images_per_class(found)
        return found, None
    if split == "image":
        return split_by_image(found, test_fraction, seed)
    return split_by_class(found, test_fraction, seed, shuffle=split == "class")


def load_split(root, split: str = "class", test_fraction: float = 0.5, size: int = 224, seed: int = 0,
               valid_fraction: float = 0.0, resize: float = EVAL_RESIZE, verify: bool = True, skip=()) -> Split:
    """Scan ``root``, split it by ``"class"`` (random unseen test classes), ``"first-classes"`` (the last
    classes by name are the test classes) or ``"image"`` (test images of the same classes), and preprocess.
    ``test_fraction=0``: no test set, every class trains (a final fit). ``valid_fraction``: that fraction of each
    training class's images is held out for validation (choosing the epoch, calibrating the threshold).
    ``verify`` and ``skip``: see ``scan``."""
    found = scan(root, verify, skip)
    train, test = split_scan(found, split, test_fraction, seed)
    valid = None
    if valid_fraction > 0:
        train, valid = split_by_image(train, valid_fraction, seed)
    evaluate = transform(size, resize=resize)
    return Split(ImageList(train, transform(size, train=True)), test and ImageList(test, evaluate), found.skipped,
                 valid and ImageList(valid, evaluate))


def describe(split: Split) -> str:
    """A few lines on a Split: classes and images on each side, and the skipped files."""
    parts = (("train", split.train), ("validation", split.valid), ("test", split.test))
    lines = [f"{name}: {len(s.classes)} classes, {len(s)} images ({', '.join(s.classes[:6])}"
             f"{', ...' if len(s.classes) > 6 else ''})" for name, s in parts if s is not None]
    lines += [f"skipped {path}: {why}" for path, why in split.skipped]
    return "\n".join(lines)


def write_fashion_mnist(root, per_class: int, seed: int = 0, split: str = "train", data_root=None) -> Path:
    """Write ``per_class`` Fashion-MNIST images of each class as 28x28 PNG files in the ImageFolder layout."""
    from .. import data

    images, labels = data.subsample(data.load_fashion_mnist(split, data_root), per_class, seed).tensors
    pixels = (data.denormalize(images).squeeze(1) * 255).round().to(torch.uint8).numpy()
    root, counts = Path(root), {}
    for image, label in zip(pixels, labels.tolist()):
        folder = root / data.CLASS_NAMES[label].replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        counts[label] = counts.get(label, -1) + 1
        Image.fromarray(image).save(folder / f"{counts[label]:05d}.png")
    return root
