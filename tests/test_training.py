import torch
from pytorch_metric_learning import losses, miners

from course_utils import data, evaluation, models, setup, training


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
    history = training.fit(model, loss_fn, miner, optimizer, loader, config.device, num_epochs=3,
                           eval_fn=lambda m: evaluation.evaluate(m, toy_dataset(), config.device),
                           progress=False)
    return history


def test_fit_returns_history_and_learns():
    history = run(0)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert set(history[0]) >= {"loss", "seconds", "p1", "r_precision"}
    assert history[-1]["loss"] < history[0]["loss"]


def test_same_seed_gives_identical_metrics():
    strip = lambda h: [{k: v for k, v in row.items() if k != "seconds"} for row in h]  # noqa: E731
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
    training.train_epoch(model, SpyLoss(), miner, optimizer, loader, torch.device("cpu"), progress=False)
    assert len(seen) == 4 and all(len(t) == 3 for t in seen)


def test_cross_entropy_trains_a_classifier():
    config = setup(0, verbose=False)
    model = models.Classifier(small_net(), num_classes=4)
    loader = data.make_loader(toy_dataset(), batch_size=16, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    history = training.fit(model, torch.nn.CrossEntropyLoss(), None, optimizer, loader, config.device, 3,
                           progress=False)
    assert history[-1]["loss"] < history[0]["loss"]


def test_on_batch_sees_every_batch_before_the_step():
    model = models.EmbeddingNet(models.ConvTrunk(widths=(4,)), embedding_dim=3)
    loader = data.make_loader(toy_dataset(), batch_size=16, seed=0)
    seen = []
    training.fit(model, losses.ContrastiveLoss(), None, torch.optim.SGD(model.parameters(), lr=0.1), loader,
                 "cpu", num_epochs=2, progress=False, on_batch=lambda out, y: seen.append((out.shape, out.requires_grad)))
    assert seen == [((16, 3), False)] * (2 * len(loader))
