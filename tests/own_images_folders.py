"""Small made-up image folders for the lesson-10 tests: one colour per class, so a few steps can learn them."""
from pathlib import Path

import numpy as np
from PIL import Image


def write_folder(root, classes=6, per_class=6, size=16, seed=0, first=0) -> Path:
    """``classes`` sub-folders ``c0, c1, ...`` (from ``c{first}``) of ``per_class`` noisy RGB PNG files of one hue
    each; another ``seed`` draws other images of the same classes."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    for c in range(first, first + classes):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
        colour = np.array([(c * 97) % 256, (c * 53 + 80) % 256, (c * 31 + 160) % 256])
        for i in range(per_class):
            pixels = np.clip(colour + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"c{c}" / f"{i}.png")
    return root
