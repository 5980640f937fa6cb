"""The benchmark's parts: the hardware's peaks, training, embedding and retrieval, each a set of rows.

Every timed phase goes through ``measure.compare``: calibrated to last at least ``config.min_seconds`` per
measurement, measured ``config.rounds`` times, the pipelines of one part taking turns. Rows report medians with
their spread, and every ratio (``x_usual`` of each pipeline, the part's ``speedup``) is the median of the
round-by-round ratios, with their spread.
"""
import gc

import torch

from benchmarks import measure, pipelines
from course_utils import evaluation

GPU_CHUNK_BYTES = 2**30  # one chunk of retrieval distances on a GPU: fewer, larger matrix products


def guarded(fn, *args, **kwargs) -> dict:
    """``fn(...)``, or ``{"error": ...}`` if it raises (a variant that fails must not lose the others)."""
    try:
        return fn(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - reported in the results, not hidden
        return {"error": f"{type(err).__name__}: {err}"[:500]}


def compare_pipelines(named: dict, config, device) -> dict:
    """``{name: Pipeline}`` measured together: one row each (images/s, seconds, memory, the last loss), and
    ``x_usual`` (round-by-round ratio of images/s to the ``usual`` row's) when ``usual`` is among them."""
    last = {}

    def keeping(name, step):
        def run():
            last[name] = step()
        return run

    timings = measure.compare({name: keeping(name, p.step) for name, p in named.items()}, config.rounds,
                              config.min_seconds, device)
    rows = {}
    for name, pipeline in named.items():
        loss = last.get(name)
        extra = {"loss": loss} if isinstance(loss, float) else {}
        rows[name] = measure.rate_row(timings[name], pipeline.images, "images", **pipeline.info, **extra)
        rows[name]["first_call_s"] = timings[name]["calibration"][0][1]
    if "usual" in rows:
        for name, row in rows.items():
            if name != "usual":
                row["x_usual"] = measure.ratio(row, rows["usual"])
    return rows


def speedups(rows: dict, same_batch: bool = True) -> dict:
    """``rows`` plus ``speedup`` (course / usual) and ``speedup_device`` (the best course_device*, with
    ``same_batch`` only those at the course's batch size, / usual): medians of the round-by-round ratios, with
    ``*_spread``."""
    out = dict(rows, speedup=rows["course"]["x_usual"]["median"], speedup_spread=rows["course"]["x_usual"]["spread"])
    device = [(row["x_usual"]["median"], name) for name, row in rows.items()
              if name.startswith("course_device") and "x_usual" in row
              and (not same_batch or row.get("batch_size") == rows["course"].get("batch_size"))]
    if device:
        best = max(device)[1]
        out.update(speedup_device=rows[best]["x_usual"]["median"],
                   speedup_device_spread=rows[best]["x_usual"]["spread"], speedup_device_pipeline=best)
    return out


# ---------------------------------------------------------------- FLOPs and the hardware's peaks

def matmul_row(device, size: int, config, dtype=torch.float32) -> dict:
    """GFLOP/s of a square ``size`` matrix product: the machine's matmul peak, as torch reaches it."""
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    return measure.measure_once(lambda: a @ b, config.rounds, config.min_seconds, device, 2 * size**3 / 1e9,
                                "gflop")


def conv_row(device, batch: int, config, dtype=torch.float32, channels_last: bool = False) -> dict:
    """GFLOP/s of a representative conv: 64 -> 128 channels, 3x3, on 14x14 maps (the trunk's widest layer)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    conv = torch.nn.Conv2d(64, 128, 3, padding=1, bias=False).to(device, dtype, memory_format=fmt)
    x = torch.randn(batch, 64, 14, 14, device=device, dtype=dtype).contiguous(memory_format=fmt)

    @torch.inference_mode()
    def step():
        conv(x)

    gflop = 2 * batch * 128 * 64 * 9 * 14 * 14 / 1e9
    return measure.measure_once(step, config.rounds, config.min_seconds, device, gflop, "gflop",
                                channels_last=channels_last)


def peaks(device, config) -> dict:
    """The matmul and conv peaks of this machine (fp32, the faster conv layout; on a GPU also bf16,
    channels_last): ``{kind}_gflops`` (median) and ``{kind}_gflops_spread``."""
    rows = {"matmul": matmul_row(device, config.matmul_size, config),
            "conv": max((conv_row(device, config.conv_batch, config, channels_last=cl) for cl in (False, True)),
                        key=lambda row: row["gflop_per_s"])}
    if device.type == "cuda":
        rows["matmul_bf16"] = matmul_row(device, config.matmul_size, config, torch.bfloat16)
        rows["conv_bf16"] = conv_row(device, config.conv_batch, config, torch.bfloat16, channels_last=True)
    out = {}
    for kind, row in rows.items():
        out[f"{kind}_gflops"] = row["gflop_per_s"]
        out[f"{kind}_gflops_spread"] = row["gflop_per_s_spread"]
    out["conv_channels_last"] = rows["conv"]["channels_last"]
    return out


def add_compute(row: dict, flops_per_image: float, peak: dict, bf16: bool = False) -> dict:
    """Add achieved GFLOP/s (median, spread) and its fraction of the conv and matmul peaks (the bf16 ones for a
    bf16 pipeline): median over median, and the widest fractions the two spreads allow."""
    if "images_per_s" not in row:
        return row
    scale = flops_per_image / 1e9
    row["gflops"] = round(row["images_per_s"] * scale, 2)
    row["gflops_spread"] = {k: v * scale if k != "n" else v for k, v in row["images_per_s_spread"].items()}
    suffix = "_bf16" if bf16 and "conv_bf16_gflops" in peak else ""
    for kind in ("conv", "matmul"):
        name = f"{kind}{suffix}_gflops"
        if name in peak:
            row[f"fraction_of_{kind}_peak"] = round(row["gflops"] / peak[name], 4)
            low, high = peak[f"{name}_spread"]["min"], peak[f"{name}_spread"]["max"]
            row[f"fraction_of_{kind}_peak_spread"] = {"min": row["gflops_spread"]["min"] / high,
                                                      "max": row["gflops_spread"]["max"] / low}
    return row


# ---------------------------------------------------------------- training and embedding

def training_part(sets, config, device, flops, peak) -> dict:
    """Every training pipeline from one set of initial weights, measured together; the speedups over the usual
    pipeline; and the loaders alone (``loaders_only``, measured together)."""
    course_train, usual_train = sets["course"][0], sets["usual"][0]
    initial = pipelines.new_model(config.seed)
    course, usual, only = pipelines.copies(initial, 3)
    named = {"course": pipelines.course_training(course, course_train, config, device),
             "usual": pipelines.usual_training(usual, usual_train, config, device),
             "model_only": pipelines.model_only_training(only, config, device)}
    if config.device_variants:
        for size in (config.batch_size, *config.device_batch_sizes):
            name = "course_device" if size == config.batch_size else f"course_device_batch{size}"
            named[name] = pipelines.device_training(pipelines.copies(initial, 1)[0], course_train, config, device,
                                                    size)
    rows = compare_pipelines(named, config, device)
    for row in rows.values():
        add_compute(row, flops["train_per_image"], peak, bf16=row.get("amp") == "bf16")
    return speedups(rows) | {"loaders_only": compare_pipelines(pipelines.loaders(sets, config, device), config,
                                                                 device)}


def compiled_part(sets, config, device, results: dict) -> None:
    """``course_device_compiled`` into ``results["training"]``, run last (compiling may take long, and a run cut
    short then keeps every other part), measured together with a fresh usual pipeline for its ratio. Its
    ``compile_s`` is the first call's time less the median call."""
    def rows():
        initial = pipelines.new_model(config.seed)
        compiled, usual = pipelines.copies(initial, 2)
        return compare_pipelines(
            {"usual": pipelines.usual_training(usual, sets["usual"][0], config, device),
             "course_device_compiled": pipelines.device_training(compiled, sets["course"][0], config, device,
                                                                 config.batch_size, compiled=True)},
            config, device)["course_device_compiled"]

    row = guarded(rows)
    if "images_per_s" in row:
        row["compile_s"] = max(0.0, row["first_call_s"] - row["seconds"])
        add_compute(row, results["flops"]["train_per_image"], results["peaks"], bf16=row.get("amp") == "bf16")
    training = {k: v for k, v in results["training"].items() if isinstance(v, dict) and "images_per_s" in v}
    results["training"] = speedups(training | {"course_device_compiled": row}) | {
        "loaders_only": results["training"].get("loaders_only")}


def embedding_part(sets, config, device, flops, peak) -> dict:
    """Every embedding pipeline for one model, measured together, and the speedups over the usual pipeline."""
    model = pipelines.new_model(config.seed)
    named = {"course": pipelines.course_embedding(model, sets["course"][1], device),
             "usual": pipelines.usual_embedding(model, sets["usual"][1], config, device),
             "model_only": pipelines.model_only_embedding(model, device)}
    if config.device_variants:
        named["course_device"] = pipelines.device_embedding(pipelines.copies(model, 1)[0], sets["course"][1], config,
                                                            device)
    rows = compare_pipelines(named, config, device)
    for row in rows.values():
        add_compute(row, flops["forward_per_image"], peak, bf16=row.get("amp") == "bf16")
    return speedups(rows, same_batch=False)  # an embedding does not depend on its batch size


# ---------------------------------------------------------------- retrieval at scale

def synthetic_embeddings(n: int, dim: int, class_size: int, seed: int, device):
    """Gaussian classes of ``class_size`` samples: embeddings (n, dim) float32 and labels (n,) on ``device``."""
    gen = torch.Generator(device=device).manual_seed(seed)
    classes = max(1, n // class_size)
    labels = torch.arange(n, device=device) % classes
    centres = torch.randn(classes, dim, generator=gen, device=device) * 0.35
    x = torch.randn(n, dim, generator=gen, device=device)
    for start in range(0, n, 1 << 16):  # in slices: no second (n, dim) array
        x[start:start + (1 << 16)] += centres[labels[start:start + (1 << 16)]]
    return x, labels


def time_retrieval(n: int, config, device) -> list:
    """Rows for one size: the chunked path, and PML's AccuracyCalculator (CPU) when n <= ``pml_max_size``."""
    x, labels = synthetic_embeddings(n, config.retrieval_dim, config.retrieval_class_size, config.seed, device)
    use_faiss = evaluation.has_faiss() and device.type == "cpu"
    k = int(torch.bincount(labels).max()) - 1
    chunk = config.retrieval_chunk or evaluation.default_chunk_size(
        n, k, use_faiss, evaluation.CHUNK_BYTES if device.type == "cpu" else GPU_CHUNK_BYTES)
    base = {"n": n, "dim": config.retrieval_dim, "classes": max(1, n // config.retrieval_class_size), "k": k,
            "distance": config.retrieval_distance}
    out = {}

    def chunked():
        out["metrics"] = evaluation.chunked_retrieval_metrics(x, labels, config.retrieval_distance, chunk, use_faiss)

    rows = [measure.measure_once(chunked, config.rounds, config.min_seconds, device, n, "queries", **base,
                                 method="chunked", backend="faiss" if use_faiss else f"torch-{device.type}",
                                 chunk_size=chunk, data_mb=round(x.numel() * 4 / 2**20, 1))]
    rows[0]["metrics"] = out["metrics"]
    if n <= config.pml_max_size:  # on the CPU, also for GPU results: the check that they are PML's
        rows.append(time_pml_retrieval(x.cpu(), labels.cpu(), config, base, out["metrics"]))
    return rows


def time_pml_retrieval(x, labels, config, base: dict, chunked: dict) -> dict:
    """PML's AccuracyCalculator (the course's former path) on the same vectors, and its largest metric gap."""
    calculator, out = evaluation.accuracy_calculator(), {}

    def pml():
        out["metrics"] = evaluation.retrieval_metrics(x, labels, config.retrieval_distance, calculator=calculator)

    row = measure.measure_once(pml, config.rounds, config.min_seconds, x.device, len(x), "queries", **base,
                               method="pml", backend="faiss" if evaluation.has_faiss() else "torch-cpu")
    gap = max(abs(out["metrics"][m] - chunked[m]) for m in evaluation.METRICS)
    return row | {"metrics": out["metrics"], "max_abs_difference_from_chunked": gap}


def retrieval_part(config, device, results: dict, write) -> None:
    """Time every size in ``config.retrieval_sizes``, calling ``write(results)`` after each (large sizes may be
    cut short)."""
    for n in config.retrieval_sizes:
        rows = guarded(time_retrieval, n, config, device)
        results["retrieval"].extend([dict(rows, n=n)] if isinstance(rows, dict) else rows)
        write(results)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
