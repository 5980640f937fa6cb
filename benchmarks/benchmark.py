"""The course's pipeline timed against the usual tutorial pipeline and against the hardware's bound (issue 8).

    python benchmarks/benchmark.py --device cpu --threads 2          # on an idle machine, pinned with taskset
    python benchmarks/benchmark.py --device cuda                     # the GPU, with the device-resident variant

The command line. The pipelines compared are in ``pipelines.py``, how they are timed in ``measure.py`` (each phase
repeated until one measurement lasts ``--min-seconds``, then measured ``--rounds`` times, pipelines taking turns;
medians with their spread, ratios taken round by round), the parts in ``parts.py`` and the table and JSON in
``report.py``.

The table is printed and written as JSON (``--out``, default ``build/benchmark.json``), rewritten after each part
so that a run cut short keeps what it measured. Keys: ``meta``, ``flops``, ``peaks``, ``training``, ``embedding``
(each ``{pipeline: row}`` plus ``speedup`` and ``speedup_spread``), ``retrieval`` (a list of rows) and ``targets``.
"""
import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if not __package__:  # run as a script (or loaded from its path): the repository root makes ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks import measure, parts, pipelines, report
from benchmarks.report import table  # noqa: F401 - device_run.sh prints results with ``benchmark.table``
from course_utils import evaluation

# The options that default by device type; an option given on the command line wins.
PRESETS = {
    "cpu": {"amp": "none", "compile": "off", "device_variants": False, "device_batch_sizes": (),
            "retrieval_sizes": (10_000, 30_000), "matmul_size": 2048, "conv_batch": 256},
    "cuda": {"amp": "bf16", "compile": "on", "device_variants": True, "device_batch_sizes": (1024,),
             "retrieval_sizes": (10_000, 100_000, 1_000_000), "matmul_size": 8192, "conv_batch": 4096},
}


@dataclass(frozen=True)
class Config:
    """Everything one run uses, built once from the command line and the device's preset."""
    device: str = "cpu"
    threads: int | None = None
    out: str = "build/benchmark.json"
    seed: int = 0
    train_images: int = 15000
    test_images: int = 10000
    batch_size: int = 128
    workers: int = 2
    usual_embed_batch_size: int = 32
    device_variants: bool = False
    device_batch_sizes: tuple = ()
    amp: str = "none"
    compile: str = "off"
    compile_mode: str | None = None
    retrieval_sizes: tuple = (10_000, 30_000)
    retrieval_dim: int = 128
    retrieval_class_size: int = 1000
    retrieval_distance: str = "euclidean"
    retrieval_chunk: int | None = None
    pml_max_size: int = 10000
    matmul_size: int = 2048
    conv_batch: int = 256
    min_seconds: float = measure.MIN_SECONDS
    rounds: int = measure.ROUNDS
    skip_peaks: bool = False
    skip_training: bool = False
    skip_embedding: bool = False
    skip_retrieval: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Config":
        """The options given (None or "auto": not given), over the preset of the device's type."""
        given = {k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items()
                 if v is not None and v != "auto"}
        preset = PRESETS[torch.device(given.get("device", cls.device)).type]
        return cls(**(preset | given))


def parse_args(argv=None) -> argparse.Namespace:
    """The benchmark's options; sizes default by device (see ``--help``); None means the preset's value."""
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
    p.add_argument("--device-variants", action="store_true", default=None,
                   help="also run course_device (default: on a GPU only)")
    p.add_argument("--device-batch-sizes", type=int, nargs="*", help="extra batch sizes for course_device "
                   "(informative: a larger batch is a different training); default 1024 on a GPU")
    p.add_argument("--amp", choices=["auto", "bf16", "none"],
                   help="autocast of course_device; auto (default): bf16 on a GPU, none on a CPU")
    p.add_argument("--compile", choices=["auto", "on", "off"],
                   help="course_device_compiled; auto (default): on for a GPU")
    p.add_argument("--compile-mode", default=None, help="torch.compile's mode, e.g. reduce-overhead")
    p.add_argument("--retrieval-sizes", type=int, nargs="*", help="default: 10000 30000 (cpu), 10000 100000 "
                   "1000000 (cuda)")
    p.add_argument("--retrieval-dim", type=int, default=128)
    p.add_argument("--retrieval-class-size", type=int, default=1000,
                   help="samples per synthetic class: k = this - 1 at every size")
    p.add_argument("--retrieval-distance", choices=evaluation.DISTANCES, default="euclidean")
    p.add_argument("--retrieval-chunk", type=int, help="queries per chunk; default: evaluation's choice")
    p.add_argument("--pml-max-size", type=int, default=10000, help="also time PML's AccuracyCalculator up to this N")
    p.add_argument("--matmul-size", type=int, help="square matmul for the peak; default 2048 (cpu), 8192 (cuda)")
    p.add_argument("--conv-batch", type=int, help="batch of the peak conv; default 256 (cpu), 4096 (cuda)")
    p.add_argument("--min-seconds", type=float, default=measure.MIN_SECONDS,
                   help="each measurement repeats its phase until it lasts this long")
    p.add_argument("--rounds", type=int, default=measure.ROUNDS,
                   help="measurements per phase; each reported time is their median")
    for part in ("peaks", "training", "embedding", "retrieval"):
        p.add_argument(f"--skip-{part}", action="store_true")
    return p.parse_args(argv)


def config_from(argv=None) -> Config:
    """``Config`` of a command line (a list of arguments; None: ``sys.argv``)."""
    return Config.from_args(parse_args(argv))


def set_threads(config: Config) -> None:
    """Torch's and faiss's threads, if ``--threads`` was given."""
    if config.threads:
        torch.set_num_threads(config.threads)
        if evaluation.has_faiss():
            import faiss

            faiss.omp_set_num_threads(config.threads)


def run(config: Config) -> dict:
    """Every part that is not skipped, in order; the JSON is rewritten after each part."""
    start = time.perf_counter()
    set_threads(config)
    device = torch.device(config.device)

    def write(results):
        results["meta"]["elapsed_s"] = round(time.perf_counter() - start, 1)
        results["meta"]["loadavg_last"] = report.loadavg()
        report.write_json(results, config.out)

    results = {"meta": report.machine_info(device, config) | {"start_rss_mb": round(measure.status_mb("VmRSS"), 1)},
               "flops": pipelines.model_flops(batch_size=4), "peaks": {}, "training": {}, "embedding": {},
               "retrieval": [], "targets": {}}
    write(results)
    if not config.skip_peaks:
        results["peaks"] = parts.peaks(device, config)
        write(results)
    if not (config.skip_training and config.skip_embedding):
        with tempfile.TemporaryDirectory() as workdir:
            sets = {"course": pipelines.course_sets(config.train_images, config.test_images),
                    "usual": pipelines.usual_sets(config.train_images, config.test_images, workdir)}
            for part, fn in (("training", parts.training_part), ("embedding", parts.embedding_part)):
                if not getattr(config, f"skip_{part}"):
                    results[part] = parts.guarded(fn, sets, config, device, results["flops"], results["peaks"])
                    results["targets"] = report.targets(results, device)
                    write(results)
            if config.compile == "on" and config.device_variants and "course" in results["training"]:
                parts.compiled_part(sets, config, device, results)
                results["targets"] = report.targets(results, device)
                write(results)
            del sets  # the images' memory is not the retrieval's
    if not config.skip_retrieval:
        parts.retrieval_part(config, device, results, write)
    write(results)
    return results


def main(argv=None) -> dict:
    """Run the benchmark, print the table, write the JSON; returns the results."""
    config = config_from(argv)
    results = run(config)
    print(report.table(results))
    print(f"written: {config.out} ({results['meta']['elapsed_s']:.0f} s)")
    return results


if __name__ == "__main__":
    main()
