"""What the benchmark reports: the machine, the targets of issue 8, the printed table and the JSON file."""
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from course_utils import evaluation

TARGETS = {"cpu": {"training": 1.5, "embedding": 3.0}, "cuda": {"training_device": 10.0}}


def machine_info(device, config) -> dict:
    """What ran where: versions, processor, threads, GPU, and the configuration."""
    info = {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
            "threads": torch.get_num_threads(), "cpus_usable": usable_cpus(),
            "cpu_model": cpu_model(), "faiss": evaluation.has_faiss(), "argv": sys.argv[1:],
            "options": asdict(config), "date": time.strftime("%Y-%m-%d %H:%M:%S"), "loadavg_start": loadavg()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def loadavg() -> list | None:
    """The system's load averages over 1, 5 and 15 minutes (another process busy on the cores shows here)."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def usable_cpus() -> int:
    """CPUs this process may run on (``taskset`` narrows them)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    except OSError:
        return platform.processor()


def targets(results: dict, device) -> dict:
    """Each target of issue 8 for this device: ``{name: {"target", "measured", "spread", "met"}}``; ``measured``
    is the median ratio, and ``met`` asks it of the median."""
    out = {}
    for name, target in TARGETS.get(device.type, {}).items():
        part, _, variant = name.partition("_")
        key = "speedup_" + variant if variant else "speedup"
        measured = results.get(part, {}).get(key)
        if measured is not None:
            out[name] = {"target": target, "measured": round(measured, 3),
                         "spread": results[part].get(key + "_spread"), "met": measured >= target}
    return out


def write_json(results: dict, path) -> None:
    """Write ``results`` to ``path`` atomically (a run cut short leaves the last complete file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(finite(results), indent=2, default=str, allow_nan=False))
    tmp.replace(path)


def finite(obj):
    """``obj`` with NaN and infinities replaced by None (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


# ---------------------------------------------------------------- the printed table

def table(results: dict) -> str:
    """The results as text: one line per pipeline and part (medians; images/s spread as min-max in % of the median;
    the ratio to usual with its min-max), then retrieval, then targets."""
    header = (f"{'part':<10} {'pipeline':<26} {'images/s':>10} {'min-max %':>11} {'x usual':>8} {'x min-max':>11} "
              f"{'seconds':>8} {'peak MB':>8} {'GFLOP/s':>8} {'% conv pk':>9}")
    lines = [header]
    for part in ("training", "embedding"):
        rows = results.get(part, {})
        lines += [pipeline_line(part, name, row) for name, row in rows.items() if isinstance(row, dict)
                  and not name.endswith("_spread")]
        if "error" in rows:
            lines.append(f"{part:<10} failed: {rows['error']}")
    lines += [retrieval_line(row) for row in results.get("retrieval", [])]
    for name, t in results.get("targets", {}).items():
        low_high = f" [{t['spread']['min']:.2f}-{t['spread']['max']:.2f}]" if t.get("spread") else ""
        lines.append(f"target     {name:<26} {t['measured']:.2f}x{low_high} (target {t['target']}x): "
                     f"{'met' if t['met'] else 'NOT met'}")
    return "\n".join(lines)


def _range(spread: dict, median: float, percent: bool) -> str:
    if not spread or not median:
        return ""
    if percent:
        return f"{100 * (spread['min'] / median - 1):+.0f}/{100 * (spread['max'] / median - 1):+.0f}"
    return f"{spread['min']:.2f}-{spread['max']:.2f}"


def pipeline_line(part: str, name: str, row: dict) -> str:
    if name == "loaders_only":
        return "\n".join(f"{part:<10} {'loader only: ' + loader:<26} {r['images_per_s']:>10.0f} "
                         f"{_range(r.get('images_per_s_spread'), r['images_per_s'], True):>11}"
                         for loader, r in row.items() if isinstance(r, dict) and "images_per_s" in r)
    if "images_per_s" not in row:
        return f"{part:<10} {name:<26} {row.get('error', '')}"
    ratio = row.get("x_usual", {})
    peak = row.get("peak_cuda_mb", row.get("peak_rss_mb", float("nan")))
    return (f"{part:<10} {name:<26} {row['images_per_s']:>10.0f} "
            f"{_range(row.get('images_per_s_spread'), row['images_per_s'], True):>11} "
            f"{ratio.get('median', 1.0):>8.2f} {_range(ratio.get('spread'), 1, False):>11} {row['seconds']:>8.2f} "
            f"{peak:>8.0f} {row.get('gflops', 0):>8.1f} {100 * row.get('fraction_of_conv_peak', 0):>9.1f}")


def retrieval_line(row: dict) -> str:
    peak = row.get("peak_cuda_mb", row.get("peak_rss_mb", float("nan")))
    spread = _range(row.get("seconds_spread"), row.get("seconds"), True)
    return (f"retrieval  {row.get('method', '?'):<8} n={row['n']:<9} k={row.get('k', '?'):<5} "
            f"{row.get('backend', ''):<11} {row.get('seconds', float('nan')):8.2f} s ({spread:>7} %) "
            f"{peak:9.0f} MB {row.get('error', '')}")
