"""End to end, offline, on generated folders: a final fit on every class with the epoch chosen on held-out images,
a separate gallery indexed (and added to), a query/gallery evaluation with an unknown class, a calibrated search
that answers "no match" for it, and the TorchScript export checked against the model without course_utils."""
import json
import subprocess
import sys

import pytest
import torch
from own_images_folders import write_folder

from course_utils.own_images import cli, commands, index, rerank

TINY = ["--trunk", "resnet18", "--size", "16", "--weights", "none", "--batch-size", "8", "--embedding-dim", "16"]
UNKNOWN = 37  # class c37: in neither the training folder nor the gallery, its colour far from all six (c9 sat
# near c1, and whether it fell below the threshold turned on the last digits of the toy training run)


@pytest.fixture(scope="module")
def final_fit(tmp_path_factory):
    """A final fit (--test-fraction 0, --centre) on classes c0-c5, 2 epochs, and folders of other images of them."""
    root = tmp_path_factory.mktemp("own_gallery")
    train = write_folder(root / "train", classes=6, per_class=15, seed=0)
    write_folder(root / "gallery", classes=6, per_class=4, seed=1)
    queries = write_folder(root / "queries", classes=6, per_class=3, seed=2)
    write_folder(queries, classes=1, per_class=3, seed=3, first=UNKNOWN)
    assert cli.main(["train", str(train), "--out", str(root / "run"), "--epochs", "2", "--test-fraction", "0",
                     "--centre", *TINY]) == 0
    return root


def test_the_final_fit_trains_every_class_and_keeps_the_best_validation_epoch(final_fit):
    record = json.loads((final_fit / "run" / "recipe.json").read_text())
    history = record["history"]
    assert [row["epoch"] for row in history] == [1, 2] and all("valid map_r" in row for row in history)
    best = max(row["valid map_r"] for row in history)
    assert [row["selected"] for row in history] == [row["valid map_r"] == best for row in history]
    calibration = json.loads((final_fit / "run" / "calibration.json").read_text())
    assert calibration["kind"] in ("search", "pairs") and 0 < calibration["threshold"] < 1
    assert len(json.loads((final_fit / "run" / "gallery.json").read_text())["classes"]) == 6
    centring = record["centring"]  # measured on the validation images both ways (the default: not centred)
    assert set(centring) == {"as trained", "centred"}
    assert all(set(v) == {"map_r", "mean_cos"} for v in centring.values())
    run = index.load(final_fit / "run")  # --centre: the model's embeddings of its training images average to 0
    embeddings = index.embed_files(run, run.paths)
    assert record["recipe"]["centre"] and embeddings.mean(0).abs().max() < 1e-3 * embeddings.abs().mean()


def test_index_replaces_the_training_images_then_adds_only_new_files(final_fit, capsys):
    run, gallery = final_fit / "run", final_fit / "gallery"
    first = sorted(str(p) for p in gallery.rglob("*.png") if p.stem in ("0", "1"))
    assert cli.main(["index", str(run), *first]) == 0
    assert index.load(run).paths == first
    assert cli.main(["index", str(run), str(gallery)]) == 0  # the folder: the other 12 images are added
    loaded = index.load(run)
    assert loaded.paths[:len(first)] == first and loaded.index.ntotal == len(loaded.paths) == 24
    assert sorted(loaded.paths) == sorted(str(p) for p in gallery.rglob("*.png"))
    assert cli.main(["index", str(run), str(gallery)]) == 0
    assert "added 0 images" in capsys.readouterr().out and index.load(run).index.ntotal == 24


def test_evaluate_query_gallery_with_an_unknown_class(final_fit, capsys):
    run, out = final_fit / "run", final_fit / "result.json"
    assert cli.main(["index", str(run), str(final_fit / "gallery"), "--rebuild"]) == 0
    assert cli.main(["evaluate", str(run), "--queries", str(final_fit / "queries"), "--gallery",
                     str(final_fit / "gallery"), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["queries"], result["unknown_queries"], result["gallery"]) == (21, 3, 24)
    assert set(result["closed_set"]) == {"p1", "r_precision", "map_r"} and result["closed_set"]["p1"] == 1.0
    assert result["open_set"]["unknown_rejected"] == 1.0 and result["open_set"]["known_answered_right"] > 0.5
    assert "open set" in capsys.readouterr().out


def test_evaluate_and_search_with_query_expansion(final_fit, capsys):
    """--rerank qe ranks with the expanded queries (checked against rerank.query_expansion) and still decides
    "no match" on the first search's score."""
    run, out = final_fit / "run", final_fit / "qe.json"
    assert cli.main(["index", str(run), str(final_fit / "gallery"), "--rebuild"]) == 0
    assert cli.main(["evaluate", str(run), "--queries", str(final_fit / "queries"), "--gallery",
                     str(final_fit / "gallery"), "--rerank", "qe", "--qe-k", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    loaded = index.load(run)
    sets = commands.embed_sets(loaded, [final_fit / "queries"], [final_fit / "gallery"], "cpu")
    plain = commands.query_gallery(*sets[:4], result["open_set"]["threshold"])
    queries, labels, gallery, gallery_labels = sets[:4]
    known = torch.isin(labels, gallery_labels)
    expanded = rerank.query_expansion(queries, gallery, 2)
    expected = index.query_gallery_metrics(expanded[known], labels[known], gallery, gallery_labels)
    assert result["closed_set"] == pytest.approx(expected)
    assert result["open_set"]["unknown_rejected"] == plain["open_set"]["unknown_rejected"]
    assert "query expansion with 2 neighbours" in capsys.readouterr().out
    unknown = final_fit / "queries" / f"c{UNKNOWN}" / "0.png"
    assert cli.main(["search", str(run), str(unknown), "--k", "2", "--rerank", "qe"]) == 0
    assert "no match" in capsys.readouterr().out


def test_calibrated_search_answers_no_match_for_an_unknown_class(final_fit, capsys):
    run = final_fit / "run"
    assert cli.main(["index", str(run), str(final_fit / "gallery"), "--rebuild"]) == 0
    unknown, known = final_fit / "queries" / f"c{UNKNOWN}" / "0.png", final_fit / "queries" / "c2" / "0.png"
    capsys.readouterr()
    assert cli.main(["search", str(run), str(unknown), str(known), "--k", "2"]) == 0
    out = capsys.readouterr().out.split(f"{known}:")
    assert "no match" in out[0] and "no match" not in out[1] and out[1].split()[2] == "c2"
    assert cli.main(["search", str(run), str(unknown), "--threshold", "none"]) == 0
    assert "no match" not in capsys.readouterr().out


def test_calibrate_recalibrates_on_held_out_folders_against_the_index(final_fit, capsys):
    run = final_fit / "run"
    assert cli.main(["index", str(run), str(final_fit / "gallery"), "--rebuild"]) == 0
    assert cli.main(["calibrate", str(run), str(final_fit / "queries")]) == 0
    calibration = json.loads((run / "calibration.json").read_text())
    assert calibration["kind"] == "search" and calibration["positives"] + calibration["negatives"] == 21
    assert calibration["negatives"] >= 3  # at least the unknown class's queries
    assert "held-out queries" in capsys.readouterr().out


def test_torchscript_export_reproduces_the_embeddings_without_course_utils(final_fit):
    """model.ts is loaded in a fresh interpreter that cannot import course_utils."""
    run = final_fit / "run"
    loaded = index.load(run)
    images = torch.stack([index.preprocess("resnet18", loaded.size)(index.folder.open_rgb(p))
                          for p in sorted((final_fit / "queries").rglob("*.png"))[:5]])
    torch.save(images, final_fit / "images.pt")
    script = ("import sys, torch; sys.modules['course_utils'] = None; "
              f"net = torch.jit.load({str(run / 'model.ts')!r}); "
              f"torch.save(net(torch.load({str(final_fit / 'images.pt')!r})), {str(final_fit / 'out.pt')!r})")
    subprocess.run([sys.executable, "-c", script], check=True, cwd=final_fit)
    with torch.no_grad():
        expected = loaded.model(images)
    assert torch.allclose(torch.load(final_fit / "out.pt"), expected, atol=1e-4)
