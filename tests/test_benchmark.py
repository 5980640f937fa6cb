"""benchmarks/benchmark.py end to end on tiny sizes, and the like-for-like claims its comparison rests on."""
import copy
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from course_utils import data, evaluation

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--device", "cpu", "--threads", "2", "--train-images", "128", "--test-images", "64", "--batch-size", "32",
        "--device-variants", "--device-batch-sizes", "64", "--retrieval-sizes", "1000", "600",
        "--retrieval-class-size", "100", "--pml-max-size", "1000", "--matmul-size", "128", "--conv-batch", "4"]


@pytest.fixture(scope="module")
def benchmark():
    spec = importlib.util.spec_from_file_location("benchmark", ROOT / "benchmarks" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_run(benchmark, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "benchmark.json"
    results = benchmark.main(TINY + ["--out", str(out)])
    return results, out


def strict_json(path):
    """The file parsed as JSON proper: NaN or Infinity (which Python's json would accept) fail."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(Path(path).read_text(), parse_constant=refuse)


def test_writes_valid_json_with_the_documented_keys(tiny_run):
    results, out = tiny_run
    written = strict_json(out)
    assert set(written) == {"meta", "flops", "peaks", "training", "embedding", "retrieval", "targets"}
    assert written["meta"]["device"] == "cpu" and written["meta"]["threads"] == 2
    assert written["flops"]["train_per_image"] > 2 * written["flops"]["forward_per_image"] > 0
    assert {"matmul_gflops", "conv_gflops"} <= set(written["peaks"])
    for part in ("training", "embedding"):
        for pipeline in ("course", "usual", "model_only", "course_device"):
            row = written[part][pipeline]
            assert row["images_per_s"] > 0 and row["gflops"] > 0 and "fraction_of_conv_peak" in row, (part, pipeline)
        assert written[part]["speedup"] == pytest.approx(
            written[part]["course"]["images_per_s"] / written[part]["usual"]["images_per_s"])
        assert written[part]["course"]["peak_rss_mb"] > 0
    assert written["training"]["course"]["images"] == 128
    assert written["training"]["course_device_batch64"]["batch_size"] == 64
    assert set(written["training"]["loaders_only"]) == {"course", "usual"}
    assert set(written["targets"]) == {"training", "embedding"}


def test_retrieval_rows_agree_with_pml(tiny_run):
    rows = strict_json(tiny_run[1])["retrieval"]
    assert [(r["n"], r["method"]) for r in rows] == [(1000, "chunked"), (1000, "pml"), (600, "chunked"), (600, "pml")]
    for row in rows:
        assert row["seconds"] > 0 and row["peak_rss_mb"] > 0 and set(row["metrics"]) == set(evaluation.METRICS)
    assert rows[0]["k"] == 99 and rows[0]["classes"] == 10
    assert all(r["max_abs_difference_from_chunked"] <= 1e-6 for r in rows if r["method"] == "pml")


def test_table_prints_every_part(tiny_run, benchmark):
    text = benchmark.table(tiny_run[0])
    for needle in ("training   course", "embedding  usual", "loader only: usual", "retrieval  chunked", "target"):
        assert needle in text


def test_loader_batches_are_the_loaders_own(benchmark):
    dataset = torch.utils.data.TensorDataset(torch.arange(300), torch.arange(300))
    predicting, iterated = data.make_loader(dataset, 32, seed=5), data.make_loader(dataset, 32, seed=5)
    for _ in range(2):  # two passes: the generator moves on between them, in both
        assert torch.equal(benchmark.loader_batches(predicting), torch.stack([batch for batch, _ in iterated]))


def test_both_pipelines_see_the_same_images(benchmark, tmp_path):
    course_train, course_test = benchmark.course_sets(50, 20)
    usual_train, usual_test = benchmark.usual_sets(50, 20, tmp_path)
    for course, usual in ((course_train, usual_train), (course_test, usual_test)):
        assert len(course) == len(usual)
        for i in (0, 7, len(course) - 1):
            image, label = usual[i]
            assert torch.equal(image, course[i][0]) and label == course[i][1].item()


def test_usual_and_device_resident_training_are_the_same_training(benchmark, tmp_path):
    """Same initial weights, same batches, same images: after one epoch, the same weights, whether the batches come
    through PIL images and DataLoader workers or are sliced from resident tensors (both in make_loader's order)."""
    args = benchmark.parse_args(["--train-images", "64", "--batch-size", "32", "--workers", "2", "--amp", "none"])
    course_train, _ = benchmark.course_sets(64, 1)
    usual_train, _ = benchmark.usual_sets(64, 1, tmp_path)
    device, initial = torch.device("cpu"), benchmark.new_model(0)
    usual, resident = copy.deepcopy(initial), copy.deepcopy(initial)
    benchmark.time_usual_training(usual, usual_train, args, device)
    benchmark.time_device_training(resident, course_train, args, device, 32, compiled=False, channels_last=False)
    for (name, a), b in zip(usual.state_dict().items(), resident.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name


def test_course_training_runs_the_same_number_of_images(benchmark):
    args = benchmark.parse_args(["--batch-size", "16"])
    course_train, _ = benchmark.course_sets(40, 1)
    row = benchmark.time_course_training(benchmark.new_model(0), course_train, args, torch.device("cpu"))
    assert row["images"] == 32 and row["loss"] > 0  # make_loader drops the last, incomplete batch


def test_a_failing_variant_is_reported_not_fatal(benchmark):
    row = benchmark.guarded(lambda: 1 / 0)
    assert row == {"error": "ZeroDivisionError: division by zero"}
    rows = {"usual": {"images_per_s": 10.0, "seconds": 1.0, "peak_rss_mb": 1.0}, "course_device_compiled": row}
    assert "ZeroDivisionError" in benchmark.table({"training": rows})


def test_synthetic_classes_have_the_asked_size(benchmark):
    x, labels = benchmark.synthetic_embeddings(1000, 16, 100, seed=0, device=torch.device("cpu"))
    assert x.shape == (1000, 16) and x.dtype == torch.float32
    assert torch.bincount(labels).tolist() == [100] * 10
