"""benchmarks/own_images_defaults.py (docs/own_images.md, section 8) end to end on a tiny setting: every variant
trains with its own head and neck, and the summary is the mean and spread of what each run's recipe.json says."""
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # ``benchmarks`` is not installed: it lives beside the tests
    sys.path.insert(0, str(ROOT))

from benchmarks import own_images_defaults as defaults  # noqa: E402 - after the path is set


def test_every_variant_runs_with_its_own_head_and_neck(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(defaults, "SETTING", ["--trunk", "resnet18", "--size", "16", "--weights", "none",
                                              "--offline", "--epochs", "1", "--batch-size", "8",
                                              "--embedding-dim", "8"])
    built = []
    original = defaults.cli.build_model
    monkeypatch.setattr(defaults.cli, "build_model", lambda recipe, *a, **k: built.append(
        (recipe.head, recipe.neck, recipe.seed)) or original(recipe, *a, **k))
    out = tmp_path / "result.json"
    assert defaults.main(["--seeds", "0", "1", "--per-class", "8", "--out", str(out)]) == 0
    assert sorted(built) == sorted((h, n, s) for h in ("linear", "cosine") for n in ("none", "batchnorm")
                                   for s in (0, 1))
    result = json.loads(out.read_text())
    for name, rows in result["runs"].items():
        assert [r["seed"] for r in rows] == [0, 1] and len(rows[0]["valid_map_r_per_epoch"]) == 1
        values = [r["valid_mean_cos"] for r in rows]
        assert result["summary"][name]["valid_mean_cos"] == [statistics.mean(values), statistics.stdev(values)]
        assert all(-1 <= v <= 1 for v in values) and 0 <= rows[0]["valid_map_r"] <= 1
    table = capsys.readouterr().out
    assert all(f"| {name} |" in table for name in defaults.VARIANTS)
