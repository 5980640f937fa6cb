"""How the own-images command's head and neck were chosen (docs/own_images.md, section 8): train each variant with
``python -m course_utils.own_images train`` on lesson 10's folder for several seeds, and compare them on the
validation images (held-out images of the training classes): the best epoch's MAP@R, which chooses, and the mean
cosine similarity of two validation images, which says whether the embeddings have collapsed.

    python -m benchmarks.own_images_defaults [--seeds 0 1 2 3 4] [--out benchmarks/results/own-images-defaults.json]

Each seed draws its own split of the classes, its own initialisation and its own batches; the variants of one
seed share all three. ResNet-18 at 64 px from random weights, 3 epochs, batch 20: about 30 s a run on 2 CPU cores.
"""
import argparse
import contextlib
import io
import json
import statistics
import tempfile
from pathlib import Path

from course_utils.own_images import cli, folder

VARIANTS = {"linear head, no neck": ["--head", "linear", "--neck", "none"],
            "cosine head, no neck": ["--head", "cosine", "--neck", "none"],
            "linear head, batch-norm neck": ["--head", "linear", "--neck", "batchnorm"],
            "cosine head, batch-norm neck": ["--head", "cosine", "--neck", "batchnorm"]}
SETTING = ["--trunk", "resnet18", "--size", "64", "--weights", "none", "--offline", "--epochs", "3",
           "--batch-size", "20"]


def train_variant(root: Path, run_dir: Path, options: list, seed: int) -> dict:
    """Train one variant quietly; returns what its ``recipe.json`` says about the validation images."""
    with contextlib.redirect_stdout(io.StringIO()):
        status = cli.main(["train", str(root), "--out", str(run_dir), *SETTING, *options, "--seed", str(seed)])
    if status:
        raise RuntimeError(f"train {options} --seed {seed} failed with status {status}")
    record = json.loads((run_dir / "recipe.json").read_text())
    valid = record["centring"]["as trained"]  # the selected epoch's validation embeddings
    return {"valid_map_r": valid["map_r"], "valid_mean_cos": valid["mean_cos"],
            "valid_map_r_per_epoch": [row["valid map_r"] for row in record["history"]]}


def summary(rows: list) -> dict:
    """Mean and standard deviation over seeds of each measurement."""
    return {key: (statistics.mean(r[key] for r in rows), statistics.stdev(r[key] for r in rows))
            for key in ("valid_map_r", "valid_mean_cos")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.own_images_defaults", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--per-class", type=int, default=200, help="Fashion-MNIST images per class (lesson 10: 200)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/own-images-defaults.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        root = folder.write_fashion_mnist(Path(work) / "folder", args.per_class)
        runs = {name: [{"seed": seed, **train_variant(root, Path(work) / f"{i}-{seed}", options, seed)}
                       for seed in args.seeds] for i, (name, options) in enumerate(VARIANTS.items())}
    result = {"setting": " ".join(SETTING), "per_class": args.per_class, "seeds": args.seeds, "runs": runs,
              "summary": {name: summary(rows) for name, rows in runs.items()}}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print("| variant | validation MAP@R (best epoch) | mean cosine of two validation images |\n|---|---|---|")
    for name, s in result["summary"].items():
        print(f"| {name} | {s['valid_map_r'][0]:.2f} ± {s['valid_map_r'][1]:.2f} "
              f"| {s['valid_mean_cos'][0]:.2f} ± {s['valid_mean_cos'][1]:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
