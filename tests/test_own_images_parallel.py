"""``torchrun -m course_utils.own_images train``: 2 gloo processes against one process (the oracle) on a generated
folder, the sampler that gives each process its own classes, and a resume with another number of processes."""
import json
import subprocess
import sys

import pytest
import torch
from own_images_folders import write_folder

from course_utils import distributed, joint
from course_utils.own_images import cli, ddp_check, folder, parallel

WORLD_SIZE = 2
TINY = ["--trunk", "resnet18", "--size", "16", "--weights", "none", "--embedding-dim", "16", "--device", "cpu"]


def torchrun(module: str, *args, nproc: int = WORLD_SIZE, timeout: float = 240):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", module, *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_each_rank_gets_m_images_of_its_own_classes():
    labels = torch.arange(60) % 10
    draws = []
    for rank in range(WORLD_SIZE):
        torch.manual_seed(0)
        draws.append(list(parallel.RankClassSampler(labels, m=3, batch_size=9, length=27, rank=rank,
                                                    world_size=WORLD_SIZE)))
    for step in range(3):
        batches = [labels[d[step * 9:(step + 1) * 9]] for d in draws]
        for batch in batches:
            assert sorted(torch.bincount(batch, minlength=10).tolist())[-3:] == [3, 3, 3]  # 3 classes x m=3
        assert not set(batches[0].tolist()) & set(batches[1].tolist())  # no class on two ranks in a step
    with pytest.raises(ValueError, match="more than the 10 classes"):
        parallel.RankClassSampler(labels, m=2, batch_size=12, length=24, rank=0, world_size=WORLD_SIZE)


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    root = tmp_path_factory.mktemp("own_ddp")
    write_folder(root / "images", classes=6, per_class=6)
    torchrun("course_utils.own_images.ddp_check", root / "images", root / "out", "--batch-size", 12, "--m-per-class", 2)
    return [torch.load(root / "out" / f"rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]


def one_process(ranks) -> dict:
    """The oracle: the same network on the concatenated batch, unwrapped loss and miner, in one process."""
    recipe = cli.Recipe(**ddp_check.RECIPE)
    model = cli.build_model(recipe, ranks[0]["classes"], resuming=False, download=False)
    model.load_state_dict(ranks[0]["state"])
    images, labels = (torch.cat([r[key] for r in ranks]) for key in ("images", "labels"))
    metric_loss, miner = cli.LOSSES[recipe.loss](), cli.miners.MultiSimilarityMiner(epsilon=0.1)
    embeddings, logits = model.eval()(images)
    metric = metric_loss(embeddings, labels, miner(embeddings, labels))
    result = ddp_check.loss_and_gradient(model, joint.JointLoss(metric_loss, miner, recipe.metric_weight), images,
                                         labels)
    share = len(ranks[0]["labels"])  # each process's cross-entropy is over its own share of the batch
    ce = [torch.nn.functional.cross_entropy(logits[k * share:(k + 1) * share], labels[k * share:(k + 1) * share])
          .item() for k in range(len(ranks))]
    return {**result, "metric": metric.item(), "ce": ce}


def test_the_processes_train_one_global_batch_of_disjoint_classes(checked):
    assert [(r["rank"], r["world_size"]) for r in checked] == [(0, 2), (1, 2)]
    assert all(torch.equal(checked[0]["state"][k], v) for k, v in checked[1]["state"].items())
    assert not set(checked[0]["labels"].tolist()) & set(checked[1]["labels"].tolist())


def test_the_wrapped_loss_is_the_one_process_loss_up_to_the_world_size(checked):
    reference = one_process(checked)
    weight = checked[0]["metric_weight"]
    for r, ce in zip(checked, reference["ce"]):  # each process: the global metric loss x world size + its own CE
        assert r["loss"] == pytest.approx(weight * WORLD_SIZE * reference["metric"] + ce, rel=1e-4)


def test_ddp_applies_the_one_process_gradient(checked):
    reference = one_process(checked)["gradient"]
    assert reference.norm() > 0
    for r in checked:
        assert distributed.relative_difference(r["gradient"], reference) < 1e-4


def test_torchrun_trains_and_a_single_process_resumes_the_run(tmp_path):
    images = write_folder(tmp_path / "images", classes=8, per_class=6)
    done = torchrun("course_utils.own_images", "train", images, "--out", tmp_path / "run", "--epochs", 1,
                    "--batch-size", 8, "--m-per-class", 2, "--test-fraction", 0, *TINY)
    assert "Wrote model.pt" in done.stdout
    assert cli.main(["train", str(images), "--out", str(tmp_path / "run"), "--epochs", "2", *TINY]) == 0
    history = json.loads((tmp_path / "run" / "recipe.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [1, 2]
    assert folder.scan(images).classes == json.loads((tmp_path / "run" / "gallery.json").read_text())["classes"]
