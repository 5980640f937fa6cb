"""``python -m course_utils.own_images``: train on a folder, search the run, resume after an interruption."""
import json
import subprocess
import sys

import pytest
import torch
from own_images_folders import write_folder

from course_utils import models, training
from course_utils.own_images import cli
from course_utils.own_images import folder as own_folder

TINY = ["--trunk", "resnet18", "--size", "16", "--weights", "none", "--batch-size", "8", "--embedding-dim", "16"]


def train_cli(folder, out, epochs=1):
    return cli.main(["train", str(folder), "--out", str(out), "--epochs", str(epochs), *TINY])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("own_images")
    folder = write_folder(root / "images", classes=6, per_class=6)
    assert train_cli(folder, root / "run") == 0
    return folder, root / "run"


def test_train_writes_the_run_folder(trained):
    _, run = trained
    assert {p.name for p in run.iterdir()} >= {"model.pt", "index.faiss", "gallery.json", "recipe.json",
                                               "checkpoint.pt", "model.ts", "calibration.json"}
    record = json.loads((run / "recipe.json").read_text())
    assert record["recipe"]["trunk"] == "resnet18" and len(record["history"]) == 1
    assert set(record["baseline"]) == set(record["trained"]) == {"p1", "r_precision", "map_r", "mean_cos"}
    assert [row["selected"] for row in record["history"]] == [True]  # chosen on the validation images


def test_search_puts_a_training_image_of_the_query_class_first(trained, capsys, tmp_path):
    _, run = trained
    gallery = json.loads((run / "gallery.json").read_text())
    queries = [gallery["paths"][gallery["labels"].index(c)] for c in range(len(gallery["classes"]))]
    assert cli.main(["search", str(run), *queries, "--k", "3", "--grid", str(tmp_path / "grid.png")]) == 0
    lines = capsys.readouterr().out.splitlines()
    for query in queries:
        first = lines[lines.index(f"{query}:") + 1].split()
        assert first[0] == "1" and float(first[1]) < 1e-3 and first[2] == query.split("/")[-2]
    assert (tmp_path / "grid.png").stat().st_size > 0


def test_an_interrupted_command_resumes_when_rerun(tmp_path, monkeypatch, capsys):
    folder = write_folder(tmp_path / "images", classes=4, per_class=4)
    save = training.save_checkpoint

    def save_then_interrupt(*args):
        save(*args)
        raise KeyboardInterrupt  # Ctrl-C right after the first epoch's checkpoint

    monkeypatch.setattr(training, "save_checkpoint", save_then_interrupt)
    assert train_cli(folder, tmp_path / "run", epochs=2) == 130
    assert "Run the same command again" in capsys.readouterr().err
    monkeypatch.setattr(training, "save_checkpoint", save)
    monkeypatch.setattr(own_folder, "unreadable", lambda path: pytest.fail(f"the resume opened {path} again"))
    assert train_cli(folder, tmp_path / "run", epochs=2) == 0
    assert "Resuming after epoch 1" in capsys.readouterr().out
    history = json.loads((tmp_path / "run" / "recipe.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [1, 2]


@pytest.mark.parametrize("command, message", [
    (["train", "{tmp}/images/c0", "--out", "{tmp}/run"], "no class sub-folders"),
    (["train", "{tmp}/images", "--out", "{tmp}/images/run"], "outside"),
    (["search", "{tmp}", "{tmp}/missing.jpg"], "Cannot read"),
    (["search", "{tmp}/no_run", "{tmp}/images/c0/0.png"], "model.pt is missing"),
])
def test_bad_input_gets_a_clear_message(tmp_path, capsys, command, message):
    write_folder(tmp_path / "images", classes=1, per_class=1)
    assert cli.main([part.format(tmp=tmp_path) for part in command]) == 2
    assert message in capsys.readouterr().err


def test_make_folder_writes_fashion_mnist(tmp_path):
    assert cli.main(["make-folder", str(tmp_path / "fm"), "--per-class", "2"]) == 0
    assert len(list((tmp_path / "fm").rglob("*.png"))) == 20


def test_python_dash_m_runs_the_command():
    out = subprocess.run([sys.executable, "-m", "course_utils.own_images", "train", "--help"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "--freeze-trunk" in out.stdout and "--epochs" in out.stdout


def test_a_local_weights_file_is_used_not_only_loaded(tmp_path):
    """Offline stand-in for ImageNet weights: a file of (seeded, rescaled) ResNet-18 weights given to --weights."""
    import torchvision

    torch.manual_seed(123)
    state = torchvision.models.resnet18(weights=None).state_dict()
    state["conv1.weight"] *= 3  # not what any fresh initialisation draws
    torch.save(state, tmp_path / "weights.pth")
    folder = write_folder(tmp_path / "images", classes=6, per_class=6)
    given = [*TINY[:4], *TINY[6:]]  # TINY without --weights none
    runs = {}
    for name, weights in (("file", str(tmp_path / "weights.pth")), ("none", "none")):
        assert cli.main(["train", str(folder), "--out", str(tmp_path / name), "--epochs", "1", "--freeze-trunk",
                         "--weights", weights, *given]) == 0
        runs[name] = json.loads((tmp_path / name / "recipe.json").read_text())
    saved = torch.load(tmp_path / "file" / "model.pt", weights_only=True)["state_dict"]
    trunk = {k[len("trunk."):]: v for k, v in saved.items() if k.startswith("trunk.")}
    assert torch.equal(trunk["conv1.weight"], state["conv1.weight"])  # the frozen trunk holds the file's weights
    assert all(torch.equal(trunk[k], v) for k, v in state.items() if k in trunk and "bn" not in k)
    assert runs["file"]["recipe"]["trunk_lr"] == 1e-4 and runs["none"]["recipe"]["trunk_lr"] == 1e-3
    assert runs["file"]["baseline"]["mean_cos"] != runs["none"]["baseline"]["mean_cos"]  # measured with them


def test_a_resume_refuses_changed_options(tmp_path, capsys):
    folder = write_folder(tmp_path / "images", classes=4, per_class=4)
    assert train_cli(folder, tmp_path / "run", epochs=1) == 0
    assert cli.main(["train", str(folder), "--out", str(tmp_path / "run"), "--epochs", "2", *TINY,
                     "--embedder-lr", "0.01"]) == 2
    assert "cannot change --embedder-lr (the run has 0.001, the command 0.01)" in capsys.readouterr().err
    assert cli.main(["train", str(folder), "--out", str(tmp_path / "run"), "--epochs", "2"]) == 0  # its recipe
    assert json.loads((tmp_path / "run" / "recipe.json").read_text())["recipe"]["size"] == 16


def test_a_run_saved_before_the_neck_and_head_options_resumes_with_what_it_had(tmp_path):
    folder = write_folder(tmp_path / "images", classes=4, per_class=4)
    run = tmp_path / "run"
    assert cli.main(["train", str(folder), "--out", str(run), "--epochs", "1", *TINY,
                     "--neck", "none", "--head", "linear"]) == 0
    saved = json.loads((run / "recipe.json").read_text())
    for name in ("neck", "head"):  # as a run of an earlier version wrote it
        del saved["recipe"][name]
    (run / "recipe.json").write_text(json.dumps(saved))
    assert cli.main(["train", str(folder), "--out", str(run), "--epochs", "2"]) == 0  # the checkpoint loads
    record = json.loads((run / "recipe.json").read_text())
    assert (record["recipe"]["neck"], record["recipe"]["head"], len(record["history"])) == ("none", "linear", 2)
    assert torch.load(run / "model.pt", weights_only=True)["neck"] == "none"


def test_the_default_model_has_a_batch_norm_neck_and_a_cosine_head(trained):
    _, run = trained
    recipe = json.loads((run / "recipe.json").read_text())["recipe"]
    assert (recipe["neck"], recipe["head"]) == ("batchnorm", "cosine")
    saved = torch.load(run / "model.pt", weights_only=True)
    assert saved["neck"] == "batchnorm" and "neck.running_mean" in saved["state_dict"]
    assert isinstance(cli.build_model(cli.Recipe(trunk="resnet18", weights="none", embedding_dim=8), 3, False,
                                      False).head, models.CosineHead)
