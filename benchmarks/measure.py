"""How the benchmark measures: repeated timings, their median and spread, ratios, and peak memory.

A timed phase is a function ``step()`` (one training epoch, one pass over the test images, one matrix product).
``calibrate`` grows the number of calls per measurement until one measurement lasts at least ``min_seconds`` (its
calls double as warm-up); ``compare`` then measures each phase ``rounds`` times, the phases taking turns (round 1
of every phase, then round 2, ...), so that a machine that slows down for a while slows every phase alike. A round
makes the calibrated number of calls, and more if they ended before ``min_seconds`` (the machine was slower while
calibrating), so that every measurement lasts at least ``min_seconds``. Each reported time is the median over the
rounds of the seconds per call, with the spread (min, quartiles, max); each ratio between two phases is taken
round by round (round i against round i) and reported as the median and spread of those ratios.
"""
import gc
import math
import resource
import statistics
import time
from pathlib import Path

import torch

MIN_SECONDS = 2.0  # each measurement lasts at least this long
ROUNDS = 5  # measurements per phase: the reported value is their median


# ---------------------------------------------------------------- statistics

def summary(values) -> dict:
    """``{"median", "min", "q1", "q3", "max", "n"}`` of ``values`` (quartiles by linear interpolation between the
    sorted values, as numpy's default percentile)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("summary of no values")
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
    return {"median": statistics.median(values), "min": min(values), "q1": q1, "q3": q3, "max": max(values),
            "n": len(values)}


def spread(values) -> dict:
    """``summary`` without the median (which a row reports under its own name)."""
    return {k: v for k, v in summary(values).items() if k != "median"}


def paired_ratios(numerators, denominators) -> list:
    """Round-by-round ratios: ``numerators[i] / denominators[i]``."""
    if len(numerators) != len(denominators):
        raise ValueError(f"{len(numerators)} rounds against {len(denominators)}")
    return [a / b for a, b in zip(numerators, denominators)]


def ratio(row: dict, reference: dict, key: str = "images_per_s") -> dict:
    """``{"median", "spread", "rounds"}`` of ``row[key] / reference[key]`` taken round by round (both rows from the
    same ``compare``)."""
    ratios = paired_ratios(row["rounds"][key], reference["rounds"][key])
    return {"median": statistics.median(ratios), "spread": spread(ratios), "rounds": ratios}


# ---------------------------------------------------------------- timing

def no_sync() -> None:
    """For work that is finished when the call returns (the CPU)."""


def device_sync(device):
    """A function that waits for ``device``'s queued work, so that wall-clock time covers it."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return no_sync


def time_calls(fn, repeats: int, clock=time.perf_counter, sync=no_sync) -> float:
    """Seconds that ``repeats`` calls of ``fn()`` take, back to back."""
    sync()
    start = clock()
    for _ in range(repeats):
        fn()
    sync()
    return clock() - start


def measure_calls(fn, repeats: int, min_seconds: float = 0.0, clock=time.perf_counter, sync=no_sync) -> tuple:
    """``repeats`` calls of ``fn()``, then more, one at a time, until they have lasted ``min_seconds``; returns
    ``(calls, seconds)``."""
    sync()
    start = clock()
    for _ in range(repeats):
        fn()
    sync()
    calls, seconds = repeats, clock() - start
    while seconds < min_seconds:
        fn()
        sync()
        calls, seconds = calls + 1, clock() - start
    return calls, seconds


def calibrate(fn, min_seconds: float = MIN_SECONDS, clock=time.perf_counter, sync=no_sync,
              max_repeats: int = 1_000_000) -> tuple:
    """The number of calls of ``fn`` that one measurement needs to last at least ``min_seconds``.

    One call first; then as many as the last measurement predicts, with a tenth to spare, and at least twice as
    many; until a measurement reaches ``min_seconds`` (or ``max_repeats``). Returns ``(repeats, tries)``, ``tries``
    the ``(repeats, seconds)`` of each measurement made. These calls are the phase's warm-up: none is reported."""
    repeats, tries = 1, []
    while True:
        seconds = time_calls(fn, repeats, clock, sync)
        tries.append((repeats, seconds))
        if seconds >= min_seconds or repeats >= max_repeats:
            return repeats, tries
        guess = math.ceil(repeats * 1.1 * min_seconds / seconds) if seconds > 0 else 10 * repeats
        repeats = min(max_repeats, max(2 * repeats, guess))


def compare(steps: dict, rounds: int = ROUNDS, min_seconds: float = MIN_SECONDS, device=None,
            clock=time.perf_counter, sync=None) -> dict:
    """Measure every ``{name: step}`` ``rounds`` times, taking turns, after calibrating each.

    Returns ``{name: {"repeats", "calibration", "calls", "seconds" (per call, one per round), "measurement_s",
    "peak_rss_mb", "start_rss_mb", "peak_rss_is_lifetime", ["peak_cuda_mb"]}}``: the memory peak is the highest
    over the rounds, each round's high-water mark reset where Linux allows."""
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    sync = sync or device_sync(device or torch.device("cpu"))
    plan = {name: calibrate(step, min_seconds, clock, sync) for name, step in steps.items()}
    out = {name: {"repeats": repeats, "calibration": [list(t) for t in tries], "calls": [], "seconds": [],
                  "measurement_s": []} for name, (repeats, tries) in plan.items()}
    for _ in range(rounds):
        for name, step in steps.items():
            with Memory(device) as memory:
                calls, seconds = measure_calls(step, out[name]["repeats"], min_seconds, clock, sync)
            out[name]["calls"].append(calls)
            out[name]["measurement_s"].append(seconds)
            out[name]["seconds"].append(seconds / calls)
            memory.merge_into(out[name])
    return out


def rate_row(timing: dict, work: float, per: str = "images", **extra) -> dict:
    """One row from one phase's ``compare`` result, ``work`` (images, FLOPs, ...) done by each call:
    ``seconds`` and ``{per}_per_s`` as medians over the rounds, each with its spread, the rounds themselves under
    ``rounds`` (with the calls each made), the repeat count, and the memory peaks."""
    rates = [work / s for s in timing["seconds"]]
    row = {per: work, "seconds": statistics.median(timing["seconds"]), "seconds_spread": spread(timing["seconds"]),
           f"{per}_per_s": statistics.median(rates), f"{per}_per_s_spread": spread(rates),
           "repeats": timing["repeats"], "measurement_s": summary(timing["measurement_s"]),
           "rounds": {"seconds": timing["seconds"], f"{per}_per_s": rates, "calls": timing["calls"]}}
    row.update({k: timing[k] for k in ("peak_rss_mb", "start_rss_mb", "peak_rss_is_lifetime", "peak_cuda_mb")
                if k in timing})
    return row | extra


def measure_once(fn, rounds: int = ROUNDS, min_seconds: float = MIN_SECONDS, device=None, work: float = 1.0,
                 per: str = "calls", **extra) -> dict:
    """``rate_row`` of one phase alone."""
    return rate_row(compare({"phase": fn}, rounds, min_seconds, device)["phase"], work, per, **extra)


# ---------------------------------------------------------------- memory

def status_mb(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process in MB, from /proc; else the lifetime peak from getrusage."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Reset this process's resident high-water mark (Linux: ``5 > /proc/self/clear_refs``); False if not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class Memory:
    """``with Memory(device) as m:`` the peak resident memory (and torch's peak CUDA allocation) of the block.
    DataLoader workers are other processes: not counted."""

    def __init__(self, device=None):
        self.device = device or torch.device("cpu")

    def __enter__(self):
        gc.collect()
        self.reset = reset_peak_rss()
        self.start_rss = status_mb("VmRSS")
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc):
        self.peak_rss = status_mb("VmHWM")
        self.peak_cuda = torch.cuda.max_memory_allocated(self.device) / 2**20 if self.device.type == "cuda" else None

    def merge_into(self, row: dict) -> None:
        """Keep the highest peak of the rounds in ``row`` (and the lowest start)."""
        row["peak_rss_mb"] = round(max(row.get("peak_rss_mb", 0.0), self.peak_rss), 1)
        row["start_rss_mb"] = round(min(row.get("start_rss_mb", math.inf), self.start_rss), 1)
        row["peak_rss_is_lifetime"] = not self.reset
        if self.peak_cuda is not None:
            row["peak_cuda_mb"] = round(max(row.get("peak_cuda_mb", 0.0), self.peak_cuda), 1)
