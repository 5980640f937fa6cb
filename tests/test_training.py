from pathlib import Path

import torch
from pytorch_metric_learning import losses, miners

from course_utils import data, evaluation, models, session, setup, training


def toy_dataset(n=64):
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 4
    images = torch.randn(n, 1, 28, 28, generator=gen) * 0.5 + labels.view(-1, 1, 1, 1).float()
    return torch.utils.data.TensorDataset(images, labels)


def small_net():
    return models.EmbeddingNet(models.ConvTrunk(widths=(4, 8)), embedding_dim=8)


def run(seed, miner=None):
    config = setup(seed, verbose=False)
    model = small_net()
    loader = data.make_loader(toy_dataset(), batch_size=16, seed=seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = losses.TripletMarginLoss(margin=0.2)
    track = training.Track(lambda m: evaluation.evaluate(m, toy_dataset(), config.device))
    history = training.fit(model, loss_fn, optimizer, loader, config.device, num_epochs=3, miner=miner,
                           callbacks=[track], progress=False)
    return history


def test_fit_returns_history_and_learns():
    history = run(0)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert set(history[0]) >= {"loss", "seconds", "p1", "r_precision"}
    assert history[-1]["loss"] < history[0]["loss"]


def test_same_seed_gives_identical_metrics():
    strip = lambda h: [{k: v for k, v in row.items() if k != "seconds"} for row in h]
    assert strip(run(1)) == strip(run(1))
    assert strip(run(1)) != strip(run(2))


def test_miner_tuples_reach_the_loss():
    seen = []

    class SpyLoss(losses.TripletMarginLoss):
        def forward(self, embeddings, labels, indices_tuple=None, *args, **kwargs):
            seen.append(indices_tuple)
            return super().forward(embeddings, labels, indices_tuple, *args, **kwargs)

    model, miner = small_net(), miners.TripletMarginMiner(margin=0.2, type_of_triplets="all")
    loader = data.make_loader(toy_dataset(), batch_size=16, seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    training.fit(model, SpyLoss(), optimizer, loader, torch.device("cpu"), 1, miner=miner, progress=False)
    assert len(seen) == 4 and all(len(t) == 3 for t in seen)


def test_cross_entropy_trains_a_classifier():
    config = setup(0, verbose=False)
    model = models.Classifier(small_net(), num_classes=4)
    loader = data.make_loader(toy_dataset(), batch_size=16, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    history = training.fit(model, torch.nn.CrossEntropyLoss(), optimizer, loader, config.device, 3, progress=False)
    assert history[-1]["loss"] < history[0]["loss"]


def test_on_batch_sees_every_batch_before_the_step():
    model = models.EmbeddingNet(models.ConvTrunk(widths=(4,)), embedding_dim=3)
    loader = data.make_loader(toy_dataset(), batch_size=16, seed=0)
    seen = []
    watch = training.WatchBatches(lambda out, y: seen.append((out.shape, out.requires_grad)))
    training.fit(model, losses.ContrastiveLoss(), torch.optim.SGD(model.parameters(), lr=0.1), loader, "cpu",
                 num_epochs=2, callbacks=[watch], progress=False)
    assert seen == [((16, 3), False)] * (2 * len(loader))


def plain_loop(model, loss_func, mining_func, device, train_loader, optimizer):
    """PML's example notebooks' ``train``, as lesson 02 writes it out: the oracle ``fit`` must equal."""
    model.train()
    for images, labels in train_loader:
        images, labels = images.to(device), labels.to(device)
        optimizer.zero_grad()
        embeddings = model(images)
        indices_tuple = mining_func(embeddings, labels)
        loss = loss_func(embeddings, labels, indices_tuple)
        loss.backward()
        optimizer.step()


def test_fit_is_the_plain_loop():
    """One epoch of ``fit`` and one of the plain loop, from the same weights on the same seeded batches: the same
    weights after it, to the last bit (``fit``'s channels-last layout is applied to the plain loop's model too);
    other batches give other weights."""
    init = small_net().state_dict()
    loss_fn, miner = losses.ContrastiveLoss(), miners.MultiSimilarityMiner(epsilon=0.1)

    def trained(loop, seed):
        net = small_net()
        net.load_state_dict(init)
        optimizer, loader = torch.optim.Adam(net.parameters(), lr=1e-2), data.make_loader(toy_dataset(), 16, seed=seed)
        if loop == "fit":
            training.fit(net, loss_fn, optimizer, loader, "cpu", 1, miner=miner, progress=False)
        else:
            plain_loop(models.on_device(net, "cpu"), loss_fn, miner, "cpu", loader, optimizer)
        return net.state_dict()

    by_fit, by_hand, other_batches = trained("fit", 3), trained("plain", 3), trained("plain", 4)
    assert not torch.equal(by_fit["embedder.weight"], init["embedder.weight"])  # it trained
    for name, weights in by_fit.items():
        assert torch.equal(weights, by_hand[name]), name
    assert not torch.equal(by_hand["embedder.weight"], other_batches["embedder.weight"])


class Recorder(training.Callback):
    """Writes down which hook ``fit`` called, with the epoch."""

    def __init__(self):
        self.calls = []

    def __getattribute__(self, name):
        if name in {"before_fit", "before_epoch", "after_forward", "after_step", "after_epoch", "after_fit"}:
            return lambda run: object.__getattribute__(self, "calls").append((name, run.epoch))
        return object.__getattribute__(self, name)


def test_callbacks_are_called_in_order():
    recorder = Recorder()
    model = small_net()
    loader = data.make_loader(toy_dataset(32), batch_size=16, seed=0)  # two batches
    training.fit(model, losses.ContrastiveLoss(), torch.optim.SGD(model.parameters(), lr=0.1), loader, "cpu", 2,
                 callbacks=[recorder], progress=False)
    epoch = lambda e: [("before_epoch", e)] + [("after_forward", e), ("after_step", e)] * 2 + [("after_epoch", e)]
    assert recorder.calls == [("before_fit", 0), *epoch(1), *epoch(2), ("after_fit", 2)]


def test_best_epoch_restores_the_weights_of_the_best_row():
    model = small_net()
    scores = iter([0.2, 0.9, 0.5])
    snapshots = []
    track = training.Track(lambda m: (snapshots.append({k: v.clone() for k, v in m.state_dict().items()}),
                                      {"score": next(scores)})[1])
    loader = data.make_loader(toy_dataset(), batch_size=16, seed=0)
    history = training.fit(model, losses.ContrastiveLoss(), torch.optim.Adam(model.parameters(), lr=1e-2), loader,
                           "cpu", 3, callbacks=[track, training.BestEpoch("score")], progress=False)
    assert [row["selected"] for row in history] == [False, True, False]
    assert all(torch.equal(v, snapshots[1][k]) for k, v in model.state_dict().items())
    assert not all(torch.equal(v, snapshots[2][k]) for k, v in model.state_dict().items())


def test_checkpoint_resumes_where_it_stopped(tmp_path):
    def run(num_epochs):
        session.seed_everything(0)
        model = small_net()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        loader = torch.utils.data.DataLoader(toy_dataset(), batch_size=16, shuffle=True)  # shuffled by torch's seed
        callbacks = [training.SeedEachEpoch(5), training.Checkpoint(tmp_path / "ckpt.pt", verbose=False)]
        return model, training.fit(model, losses.ContrastiveLoss(), optimizer, loader, "cpu", num_epochs,
                                   callbacks=callbacks, progress=False)

    run(1)
    resumed, history = run(3)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    (tmp_path / "ckpt.pt").unlink()
    straight, _ = run(3)
    for a, b in zip(resumed.state_dict().values(), straight.state_dict().values()):
        assert torch.equal(a, b)


def test_no_other_epoch_loop_in_the_package():
    """``fit`` is the package's one epoch loop: no other ``for`` loop over epochs anywhere in ``course_utils``."""
    import ast

    root = Path(training.__file__).parent
    loops = []
    for path in sorted(root.rglob("*.py")):
        for function in ast.walk(ast.parse(path.read_text())):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                loops += [f"{path.relative_to(root)}: {function.name}" for node in ast.walk(function)
                          if isinstance(node, ast.For) and "epoch" in ast.unparse(node.target) + ast.unparse(node.iter)]
    assert loops == ["training.py: fit"]
