"""benchmarks/ end to end on tiny sizes, the like-for-like claims its comparison rests on, and its timing:
repeat counts, medians, spreads and ratios."""
import copy
import dataclasses
import itertools
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from course_utils import data, evaluation

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # ``benchmarks`` is not installed: it lives beside the tests
    sys.path.insert(0, str(ROOT))

from benchmarks import benchmark, measure, parts, pipelines, report  # noqa: E402 - after the path is set

TINY = ["--device", "cpu", "--threads", "2", "--train-images", "128", "--test-images", "64", "--batch-size", "32",
        "--device-variants", "--device-batch-sizes", "64", "--retrieval-sizes", "1000", "600",
        "--retrieval-class-size", "100", "--pml-max-size", "1000", "--matmul-size", "128", "--conv-batch", "4",
        "--min-seconds", "0", "--rounds", "2", "--workers", "0"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "benchmark.json"
    results = benchmark.main(TINY + ["--out", str(out)])
    return results, out


def strict_json(path):
    """The file parsed as JSON proper: NaN or Infinity (which Python's json would accept) fail."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(Path(path).read_text(), parse_constant=refuse)


def test_writes_valid_json_with_the_documented_keys(tiny_run):
    written = strict_json(tiny_run[1])
    assert set(written) == {"meta", "flops", "peaks", "training", "embedding", "retrieval", "targets"}
    assert written["meta"]["device"] == "cpu" and written["meta"]["threads"] == 2
    assert written["meta"]["options"]["rounds"] == 2 and written["meta"]["elapsed_s"] > 0
    assert written["flops"]["train_per_image"] > 2 * written["flops"]["forward_per_image"] > 0
    assert {"matmul_gflops", "matmul_gflops_spread", "conv_gflops", "conv_gflops_spread"} <= set(written["peaks"])
    for part in ("training", "embedding"):
        for pipeline in ("course", "usual", "model_only", "course_device"):
            row = written[part][pipeline]
            assert row["images_per_s"] > 0 and row["gflops"] > 0 and "fraction_of_conv_peak" in row, (part, pipeline)
            assert len(row["rounds"]["images_per_s"]) == 2 and row["images_per_s_spread"]["n"] == 2
            assert row["images_per_s_spread"]["min"] <= row["images_per_s"] <= row["images_per_s_spread"]["max"]
        ratios = [a / b for a, b in zip(written[part]["course"]["rounds"]["images_per_s"],
                                        written[part]["usual"]["rounds"]["images_per_s"])]
        assert written[part]["speedup"] == pytest.approx(sum(ratios) / 2)  # the median of two rounds
        assert written[part]["speedup_spread"]["min"] == pytest.approx(min(ratios))
        assert written[part]["speedup_spread"]["max"] == pytest.approx(max(ratios))
        assert "speedup_device" in written[part] and "speedup_device_spread" in written[part]
        assert written[part]["course"]["peak_rss_mb"] > 0
    assert written["training"]["course"]["images"] == 128
    assert written["training"]["course_device_batch64"]["batch_size"] == 64
    assert set(written["training"]["loaders_only"]) == {"course", "usual"}
    assert set(written["targets"]) == {"training", "embedding"}
    assert written["targets"]["embedding"]["measured"] == pytest.approx(written["embedding"]["speedup"], abs=1e-3)


def test_retrieval_rows_agree_with_pml(tiny_run):
    rows = strict_json(tiny_run[1])["retrieval"]
    assert [(r["n"], r["method"]) for r in rows] == [(1000, "chunked"), (1000, "pml"), (600, "chunked"), (600, "pml")]
    for row in rows:
        assert row["seconds"] > 0 and row["peak_rss_mb"] > 0 and set(row["metrics"]) == set(evaluation.METRICS)
        assert row["seconds_spread"]["min"] <= row["seconds"] <= row["seconds_spread"]["max"]
    assert rows[0]["k"] == 99 and rows[0]["classes"] == 10
    assert all(r["max_abs_difference_from_chunked"] <= 1e-6 for r in rows if r["method"] == "pml")


def test_table_prints_every_part(tiny_run):
    text = benchmark.table(tiny_run[0])  # device_run.sh prints the JSON through ``benchmark.table``
    for needle in ("training   course", "embedding  usual", "loader only: usual", "retrieval  chunked", "target"):
        assert needle in text


# ---------------------------------------------------------------- the configuration

def test_configuration_is_built_once_from_the_presets():
    cpu, cuda = benchmark.config_from(["--device", "cpu"]), benchmark.config_from(["--device", "cuda"])
    assert (cpu.amp, cpu.compile, cpu.device_variants, cpu.device_batch_sizes) == ("none", "off", False, ())
    assert cpu.retrieval_sizes == (10_000, 30_000) and (cpu.matmul_size, cpu.conv_batch) == (2048, 256)
    assert (cuda.amp, cuda.compile, cuda.device_variants, cuda.device_batch_sizes) == ("bf16", "on", True, (1024,))
    assert cuda.retrieval_sizes == (10_000, 100_000, 1_000_000) and cuda.matmul_size == 8192
    given = benchmark.config_from(["--device", "cuda", "--amp", "none", "--compile", "auto", "--device-batch-sizes",
                                   "--retrieval-sizes", "5000", "--rounds", "7"])
    assert (given.amp, given.compile, given.device_batch_sizes, given.retrieval_sizes) == ("none", "on", (), (5000,))
    assert (given.rounds, given.min_seconds) == (7, measure.MIN_SECONDS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        given.amp = "bf16"


# ---------------------------------------------------------------- repeats, medians, spreads, ratios

class FakeClock:
    """A clock that only moves when a fake step says how long it took."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_calibrate_grows_the_repeat_count_until_a_measurement_lasts_long_enough():
    clock = FakeClock()

    def step():  # 0.3 s a call
        clock.now += 0.3

    repeats, tries = measure.calibrate(step, min_seconds=2.0, clock=clock)
    assert repeats * 0.3 >= 2.0 and tries[-1] == (repeats, pytest.approx(repeats * 0.3))
    assert all(seconds < 2.0 for _, seconds in tries[:-1]) and tries[0][0] == 1
    assert [r for r, _ in tries] == sorted({r for r, _ in tries})  # it only grows
    assert repeats <= math.ceil(2.0 / 0.3 * 1.1)  # and not far past what is needed
    assert clock.now == pytest.approx(0.3 * sum(r for r, _ in tries))  # every try's calls were made


def test_calibrate_keeps_growing_when_the_first_call_was_a_slow_warm_up():
    clock, calls = FakeClock(), []

    def step():  # the first call is slow (one-time set-up), then 0.01 s a call
        clock.now += 1.5 if not calls else 0.01
        calls.append(1)

    repeats, tries = measure.calibrate(step, min_seconds=2.0, clock=clock)
    assert tries[0] == (1, 1.5) and tries[-1][1] >= 2.0 and len(tries) > 2
    assert repeats >= 200 and all(r2 >= 2 * r1 for (r1, _), (r2, _) in itertools.pairwise(tries))


def test_calibrate_stops_at_once_for_a_long_step_and_at_max_repeats():
    clock = FakeClock()

    def slow():
        clock.now += 5.0

    assert measure.calibrate(slow, 2.0, clock=clock) == (1, [(1, 5.0)])
    repeats, tries = measure.calibrate(lambda: None, 2.0, clock=FakeClock(), max_repeats=64)  # never any time
    assert repeats == 64 and tries[-1][0] == 64


def naive_quantile(values, q):
    """Linear interpolation between the sorted values, written out."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@pytest.mark.parametrize("values", [[3.0, 1.0, 2.0, 10.0, 4.0], [5.0, 1.0, 4.0, 2.0], [7.0],
                                    list(torch.rand(9, generator=torch.Generator().manual_seed(0)).tolist())])
def test_summary_is_the_naive_median_and_quartiles(values):
    ordered, n = sorted(values), len(values)
    median = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
    got = measure.summary(values)
    assert got["median"] == pytest.approx(median) and got["n"] == n
    assert (got["min"], got["max"]) == (min(values), max(values))
    assert got["q1"] == pytest.approx(naive_quantile(values, 0.25))
    assert got["q3"] == pytest.approx(naive_quantile(values, 0.75))
    assert got["min"] <= got["q1"] <= got["median"] <= got["q3"] <= got["max"]
    assert measure.spread(values) == {k: v for k, v in got.items() if k != "median"}


def test_compare_takes_turns_and_reports_medians_and_paired_ratios():
    """Two fake phases measured together: 'fast' takes 0.1 s a call, 'slow' 0.5 s, but the machine is twice as
    slow during the third round of both. Medians and spreads match a computation by hand, and the ratio, taken
    round by round, is 5 in every round: the slow round moves both phases, not their ratio."""
    alone = FakeClock()

    def fast_alone():
        alone.now += 0.1

    r_fast, tries = measure.calibrate(fast_alone, 1.0, clock=alone)  # what compare's calibration of 'fast' does
    calibration_calls = sum(r for r, _ in tries)
    clock, log = FakeClock(), []

    def fast():
        done = log.count("fast") - calibration_calls  # calls made in the rounds so far
        clock.now += 0.1 * (2.0 if 2 * r_fast <= done < 3 * r_fast else 1.0)
        log.append("fast")

    def slow():
        third_round = log.count("fast") - calibration_calls == 3 * r_fast  # 'fast' has just done its third round
        clock.now += 0.5 * (2.0 if third_round else 1.0)
        log.append("slow")

    timings = measure.compare({"fast": fast, "slow": slow}, rounds=5, min_seconds=1.0, clock=clock)
    assert timings["fast"]["repeats"] == r_fast and timings["fast"]["calibration"] == [list(t) for t in tries]
    in_rounds = log[calibration_calls + sum(r for r, _ in timings["slow"]["calibration"]):]
    turns = [name for i, name in enumerate(in_rounds) if i == 0 or in_rounds[i - 1] != name]
    assert turns == ["fast", "slow"] * 5  # round by round, the phases taking turns
    assert len(in_rounds) == 5 * (timings["fast"]["repeats"] + timings["slow"]["repeats"])  # none topped up
    assert timings["fast"]["calls"] == [r_fast] * 5
    assert all(m >= 1.0 - 1e-9 for name in timings for m in timings[name]["measurement_s"])

    fast_row, slow_row = (measure.rate_row(timings[name], 100, "images") for name in ("fast", "slow"))
    assert fast_row["rounds"]["seconds"] == pytest.approx([0.1, 0.1, 0.2, 0.1, 0.1])
    assert slow_row["rounds"]["seconds"] == pytest.approx([0.5, 0.5, 1.0, 0.5, 0.5])
    assert fast_row["seconds"] == pytest.approx(0.1) and fast_row["images_per_s"] == pytest.approx(1000)
    assert fast_row["images_per_s_spread"]["min"] == pytest.approx(500)
    assert fast_row["seconds_spread"]["max"] == pytest.approx(0.2)
    assert slow_row["images_per_s"] == pytest.approx(200) and slow_row["repeats"] == timings["slow"]["repeats"]

    ratio = measure.ratio(fast_row, slow_row)
    assert ratio["rounds"] == pytest.approx([5.0] * 5) and ratio["median"] == pytest.approx(5.0)
    assert ratio["spread"]["min"] == pytest.approx(5.0) and ratio["spread"]["max"] == pytest.approx(5.0)
    unpaired = fast_row["images_per_s_spread"]["min"] / slow_row["images_per_s_spread"]["max"]
    assert unpaired == pytest.approx(2.5)  # what dividing unpaired extremes would have claimed


def test_a_round_tops_up_its_calls_when_the_calibration_was_slow():
    """Calibrated while the machine was slow (0.5 s a call for four calls), the phase then runs at 0.1 s a call:
    each round makes more calls than calibrated, so that every measurement still lasts min_seconds."""
    clock, calls = FakeClock(), []

    def step():
        clock.now += 0.5 if len(calls) < 4 else 0.1
        calls.append(1)

    timing = measure.compare({"phase": step}, rounds=5, min_seconds=1.0, clock=clock)["phase"]
    assert timing["repeats"] == 3 and len(calls) == 4 + sum(timing["calls"])
    assert all(c > timing["repeats"] for c in timing["calls"]) and min(timing["measurement_s"]) >= 1.0
    assert timing["seconds"] == pytest.approx([0.1] * 5)
    assert measure.measure_calls(step, 2, 0.0, clock) == (2, pytest.approx(0.2))  # no minimum: the calls asked


def test_ratios_are_paired_round_by_round_not_medians_divided():
    course = {"rounds": {"images_per_s": [10.0, 30.0, 20.0]}}
    usual = {"rounds": {"images_per_s": [5.0, 10.0, 20.0]}}
    ratio = measure.ratio(course, usual)
    assert ratio["rounds"] == [2.0, 3.0, 1.0] and ratio["median"] == 2.0
    assert (ratio["spread"]["min"], ratio["spread"]["max"]) == (1.0, 3.0)
    with pytest.raises(ValueError):
        measure.paired_ratios([1.0], [1.0, 2.0])


def test_speedups_pick_the_course_and_the_best_device_row_at_the_same_batch_size():
    def row(median, batch_size=128):
        return {"images_per_s": 1.0, "batch_size": batch_size,
                "x_usual": {"median": median, "spread": {"min": median - 1, "max": median + 1}}}

    rows = {"usual": {"images_per_s": 1.0, "batch_size": 128}, "course": row(2.0), "course_device": row(3.0),
            "course_device_batch1024": row(9.0, 1024), "course_device_compiled": row(4.0)}
    out = parts.speedups(rows)
    assert (out["speedup"], out["speedup_spread"]["min"]) == (2.0, 1.0)
    assert (out["speedup_device"], out["speedup_device_pipeline"]) == (4.0, "course_device_compiled")
    assert out["speedup_device_spread"]["max"] == 5.0


# ---------------------------------------------------------------- the pipelines are like for like

def test_loader_batches_are_the_loaders_own():
    dataset = torch.utils.data.TensorDataset(torch.arange(300), torch.arange(300))
    predicting, iterated = data.make_loader(dataset, 32, seed=5), data.make_loader(dataset, 32, seed=5)
    for _ in range(2):  # two passes: the generator moves on between them, in both
        assert torch.equal(pipelines.loader_batches(predicting), torch.stack([batch for batch, _ in iterated]))


def test_both_pipelines_see_the_same_images(tmp_path):
    course_train, course_test = pipelines.course_sets(50, 20)
    usual_train, usual_test = pipelines.usual_sets(50, 20, tmp_path)
    for course, usual in ((course_train, usual_train), (course_test, usual_test)):
        assert len(course) == len(usual)
        for i in (0, 7, len(course) - 1):
            image, label = usual[i]
            assert torch.equal(image, course[i][0]) and label == course[i][1].item()


def test_usual_and_device_resident_training_are_the_same_training(tmp_path):
    """Same initial weights, same batches, same images: after one epoch, the same weights, whether the batches come
    through PIL images and DataLoader workers or are sliced from resident tensors (both in make_loader's order)."""
    config = benchmark.config_from(["--train-images", "64", "--batch-size", "32", "--workers", "2", "--amp", "none"])
    course_train, _ = pipelines.course_sets(64, 1)
    usual_train, _ = pipelines.usual_sets(64, 1, tmp_path)
    device, initial = torch.device("cpu"), pipelines.new_model(0)
    usual, resident = copy.deepcopy(initial), copy.deepcopy(initial)
    pipelines.usual_training(usual, usual_train, config, device).step()
    pipelines.device_training(resident, course_train, config, device, 32, channels_last=False).step()
    for (name, a), b in zip(usual.state_dict().items(), resident.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name
    assert not torch.equal(usual.embedder.weight, initial.embedder.weight)  # one step of training did happen


def test_course_training_runs_the_same_number_of_images():
    config = benchmark.config_from(["--batch-size", "16"])
    course_train, _ = pipelines.course_sets(40, 1)
    pipeline = pipelines.course_training(pipelines.new_model(0), course_train, config, torch.device("cpu"))
    assert pipeline.images == 32 and pipeline.step() > 0  # make_loader drops the last, incomplete batch


def test_a_failing_variant_is_reported_not_fatal():
    row = parts.guarded(lambda: 1 / 0)
    assert row == {"error": "ZeroDivisionError: division by zero"}
    rows = {"usual": {"images_per_s": 10.0, "seconds": 1.0, "peak_rss_mb": 1.0}, "course_device_compiled": row}
    assert "ZeroDivisionError" in report.table({"training": rows})


def test_synthetic_classes_have_the_asked_size():
    x, labels = parts.synthetic_embeddings(1000, 16, 100, seed=0, device=torch.device("cpu"))
    assert x.shape == (1000, 16) and x.dtype == torch.float32
    assert torch.bincount(labels).tolist() == [100] * 10
