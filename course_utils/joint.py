"""Joint training: a metric loss on the embeddings plus cross-entropy on a classifier head's logits, both from
one forward pass (lesson 07). Also the course's default training recipe, ``RECIPE``, chosen by lesson 07's
measurements."""
import copy
import math
import time

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import data, evaluation, lesson, models
from .exercises import _call

# The course's default training recipe from lesson 07 on, chosen on validation classes, never the test classes:
# lesson 07 trains on T-shirt/top, Trouser and Pullover and treats Dress and Coat as unseen (``lesson.selection_data``;
# training images only). Full mode: 800 images per training class, 2 epochs, epoch chosen on held-out images, mean ±
# std over seeds 0, 1, 2, one 2-core CPU run ("unseen" = the two validation classes):
#
#                       seen accuracy   seen P@1        seen MAP@R      unseen P@1      unseen MAP@R
#   metric only         –               0.948 ± 0.009   0.831 ± 0.016   0.907 ± 0.002   0.668 ± 0.026
#   cross-entropy only  0.924 ± 0.035   0.940 ± 0.003   0.865 ± 0.004   0.881 ± 0.007   0.684 ± 0.028
#   joint 0.1 (this)    0.890 ± 0.092   0.948 ± 0.006   0.832 ± 0.003   0.901 ± 0.006   0.661 ± 0.020
#
# The validation classes barely separate the recipes: the largest unseen gap (metric only over cross-entropy only by
# P@1, 0.026 here) sits at the 0.03 noise threshold. The rule (``choose_recipe``), fixed before the measurement, does
# not hang on that decimal: of the recipes clearly behind no other, it prefers the one that uses both signals, a
# metric loss for retrieval and a classifier head, and joint 0.1 is clearly behind no other recipe.
RECIPE = {
    "name": "joint",
    "metric_loss": "losses.CircleLoss(m=0.4, gamma=80)",
    "miner": "miners.MultiSimilarityMiner(epsilon=0.1)",
    "weight": 0.1,  # loss = weight * metric loss (on the embeddings) + ce_weight * cross-entropy (on the logits)
    "ce_weight": 1.0,
    "chosen_by": "lesson 07, full mode, 3 seeds, on validation classes (Dress, Coat) held out of the seen classes, "
                 "by the rule of joint.choose_recipe, fixed in advance: clearly behind no other recipe there, and "
                 "the only recipe with both a metric loss and a classifier head",
}


def best_recipe() -> dict:
    """A copy of ``RECIPE``, the default of later lessons: the pick of ``choose_recipe`` on lesson 07's validation
    classes (clearly behind no other recipe there, and both retrieves with a metric loss and classifies with a head)."""
    return dict(RECIPE)


def joint_loss(embeddings, logits, labels, metric_loss, miner, weight: float = 0.1, ce_weight: float = 1.0):
    """``weight * metric_loss(embeddings, labels, miner(...)) + ce_weight * cross_entropy(logits, labels)``; a term
    whose weight is 0 is not computed (metric only: ``ce_weight=0``; cross-entropy only: ``weight=0``)."""
    loss = embeddings.new_zeros(())
    if weight:
        indices_tuple = miner(embeddings, labels) if miner is not None else None
        loss = loss + weight * metric_loss(embeddings, labels, indices_tuple)
    if ce_weight:
        loss = loss + ce_weight * F.cross_entropy(logits, labels)
    return loss


def joint_step(model, metric_loss, miner, optimizer, images, labels, weight: float = 0.1,
               ce_weight: float = 1.0) -> float:
    """One training step: one forward pass, ``joint_loss``, one backward pass, one optimiser step; returns the loss."""
    embeddings, logits = model(images)
    loss = joint_loss(embeddings, logits, labels, metric_loss, miner, weight, ce_weight)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def train_epoch(model, metric_loss, miner, optimizer, loader, device, weight: float = 0.1, ce_weight: float = 1.0,
                progress: bool = True) -> float:
    """One pass over ``loader`` with ``joint_step``; returns the mean training loss."""
    model.train()
    total, batches = 0.0, 0
    for images, labels in tqdm(loader, desc="batches", leave=False, disable=not progress):
        total += joint_step(model, metric_loss, miner, optimizer, images.to(device), labels.to(device), weight,
                            ce_weight)
        batches += 1
    return total / max(batches, 1)


def fit(model, metric_loss, miner, optimizer, loader, device, num_epochs: int, weight: float = 0.1,
        ce_weight: float = 1.0, eval_fn=None, progress: bool = True) -> list:
    """Train for ``num_epochs``; one row per epoch as ``training.fit`` writes them: epoch, loss, seconds and
    ``eval_fn(model)``'s metrics."""
    models.on_device(model, device)
    history = []
    for epoch in range(1, num_epochs + 1):
        start = time.perf_counter()
        row = {"epoch": epoch, "loss": train_epoch(model, metric_loss, miner, optimizer, loader, device, weight,
                                                   ce_weight, progress)}
        row["seconds"] = time.perf_counter() - start
        if eval_fn is not None:
            row.update(eval_fn(model))
        history.append(row)
    return history


@torch.inference_mode()
def accuracy(model, dataset, device, batch_size: int = 512) -> float:
    """Classification accuracy of a ``JointNet``'s logits on ``dataset`` (labels must be the head's class indices);
    like ``evaluation.embed`` it runs ``models.for_inference(model)`` and leaves ``model`` as it was."""
    net = models.for_inference(model, device)
    correct = 0
    for images, labels in torch.utils.data.DataLoader(dataset, batch_size=batch_size):
        correct += (net(images.to(device))[1].argmax(1).cpu() == labels).sum().item()
    return correct / len(dataset)


def train_joint(metric_loss, miner, sets, budget, config, weight: float = 0.1, ce_weight: float = 1.0, seed=None,
                init_state=None, progress: bool = False):
    """``lesson.train_embedder`` for a ``JointNet``: Adam at ``budget.lr``, batches seeded by ``seed``, MAP@R on
    ``sets.valid`` after each epoch, and the epoch with the best validation MAP@R kept; returns (model, history)."""
    seed = config.seed if seed is None else seed
    model = models.JointNet(lesson.new_embedder(budget), len(sets.seen))
    if init_state is not None:
        model.load_state_dict(init_state)
    optimizer = torch.optim.Adam(model.parameters(), lr=budget.lr)
    loader = data.make_loader(sets.train, budget.batch_size, seed=seed)
    track = lesson.map_r_tracker({"valid": sets.valid}, config.device)
    best = lesson._BestEpoch(model, lambda m: track(m.embedding_net), "valid map_r")
    history = fit(model, metric_loss, miner, optimizer, loader, config.device, budget.num_epochs, weight, ce_weight,
                  eval_fn=best, progress=progress)
    return best.restore(history), history


def results(model, sets, config, classifies: bool = True) -> dict:
    """``{"seen": {p1, r_precision, map_r, accuracy}, "unseen": {p1, r_precision, map_r}}`` of a ``JointNet``
    (retrieval with cosine distance; ``accuracy`` of the head on the seen test images if ``classifies``)."""
    table = evaluation.evaluate_splits(model.embedding_net, sets.test, config.device, "cosine")
    if classifies:
        table["seen"]["accuracy"] = accuracy(model, sets.test["seen"], config.device)
    return table


def compare_recipes(recipes: dict, metric_loss, miner, sets, budget, config, seed: int, keep=None) -> dict:
    """Train one ``JointNet`` per recipe (``{name: (weight, ce_weight)}``) from the same initial weights and the
    same batches (both set by ``seed``); returns ``{name: results(...)}``, a results table of this seed. The
    trained networks are stored in the dict ``keep`` if one is given."""
    torch.manual_seed(seed)
    init_state = models.JointNet(lesson.new_embedder(budget), len(sets.seen)).state_dict()
    table = {}
    for name, (weight, ce_weight) in recipes.items():
        model, _ = train_joint(metric_loss, miner, sets, budget, config, weight, ce_weight, seed, init_state)
        table[name] = results(model, sets, config, classifies=ce_weight > 0)
        if keep is not None:
            keep[name] = model
    return table


def summary_table(table: dict, metrics=("accuracy", "p1", "map_r")) -> str:
    """A mean-over-seeds table (``lesson.over_seeds``) as text: one row per recipe, "mean ± std" per split and
    metric; a metric a recipe lacks (no trained head: no accuracy) shows as "–"."""
    names = {"accuracy": "accuracy", **evaluation.DISPLAY_NAMES}
    columns = [(split, m) for split in ("seen", "unseen") for m in metrics
               if any(m in row.get(split, {}) for row in table.values())]
    width = max(len(name) for name in table) + 2
    lines = [" " * width + "".join(f"{split + ' ' + names[m]:>18}" for split, m in columns)]
    for name, row in table.items():
        cells = [f"{row[split][m]:.3f} ± {row[split][m + '_std']:.3f}" if m in row[split] else "–"
                 for split, m in columns]
        lines.append(f"{name:<{width}}" + "".join(f"{c:>18}" for c in cells))
    return "\n".join(lines)


def winner(table: dict, split: str, metric: str) -> tuple:
    """``(best, runner_up, clear)``: the two best recipes of a mean-over-seeds table by ``metric`` on ``split``, and
    whether the best ``lesson.wins`` against the runner-up (else the two are tied)."""
    ranked = sorted((name for name in table if metric in table[name][split]),
                    key=lambda name: table[name][split][metric], reverse=True)
    return ranked[0], ranked[1], lesson.wins(table, ranked[0], ranked[1], split, metric)


def clearly_behind(table: dict, split: str = "unseen", metrics=("p1", "map_r")) -> dict:
    """``{recipe: [(other, metric), ...]}``: for each recipe of a mean-over-seeds table, the recipes that
    ``lesson.wins`` against it on ``split``, and by which metric (an empty list: clearly behind no other)."""
    return {name: [(other, m) for other in table for m in metrics if lesson.wins(table, other, name, split, m)]
            for name in table}


def choose_recipe(table: dict, recipes: dict) -> str:
    """The course's rule for its default recipe, fixed before the measurement and applied to a mean-over-seeds table
    measured on validation classes (``lesson.selection_data``); ``recipes`` maps each name to its two weights
    ``(metric weight, cross-entropy weight)``. In this order: (1) keep the recipes that no other recipe
    ``lesson.wins`` against on the unseen (validation) classes, by P@1 or by MAP@R (``clearly_behind``); (2) among
    those, prefer the ones that use both signals, a metric loss and a classifier head; failing that, the ones with a
    head; (3) of those, the highest seen-class MAP@R."""
    passed = [name for name, behind in clearly_behind(table).items() if not behind]
    both = [name for name in passed if min(recipes[name]) > 0]
    with_head = [name for name in passed if recipes[name][1] > 0]
    return max(both or with_head or passed, key=lambda name: table[name]["seen"]["map_r"])


def sweep_plot(table: dict, weights: dict, references: dict, title=None):
    """Two panels, seen and unseen classes: each measurement (mean ± std over seeds) against the metric weight (log
    scale); ``weights`` maps recipe names of ``table`` to their weight, ``references`` maps the names of recipes to
    draw as horizontal lines (dotted, then dashed) to their legend labels."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    names, styles = list(weights), (":", "--")
    for ax, (split, metrics) in zip(axes, (("seen", ("accuracy", "p1", "map_r")), ("unseen", ("p1", "map_r")))):
        for metric in metrics:
            color = {"accuracy": "tab:blue", "p1": "tab:orange", "map_r": "tab:green"}[metric]
            ax.errorbar([weights[n] for n in names], [table[n][split][metric] for n in names],
                        [table[n][split][f"{metric}_std"] for n in names], marker="o", capsize=3, color=color,
                        label=evaluation.DISPLAY_NAMES.get(metric, metric))
            for ref, style in zip(references, styles):
                if metric in table[ref][split]:
                    ax.axhline(table[ref][split][metric], color=color, linestyle=style, linewidth=1)
        for (ref, label), style in zip(references.items(), styles):
            ax.plot([], [], color="grey", linestyle=style, label=label)
        ax.set(xscale="log", xlabel="weight w of the metric loss (cross-entropy weight 1)",
               ylabel="mean ± std over seeds", title=f"{split} classes")
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(title or "Joint training: w · metric loss + cross-entropy")
    fig.tight_layout()
    return fig


def loss_scales(model, metric_loss, miner, images, labels) -> dict:
    """The two terms of the joint loss on one batch, without training: ``{"metric": ..., "cross-entropy": ...}``."""
    with torch.no_grad():
        embeddings, logits = model(images)
        return {"metric": joint_loss(embeddings, logits, labels, metric_loss, miner, 1.0, 0.0).item(),
                "cross-entropy": joint_loss(embeddings, logits, labels, metric_loss, miner, 0.0, 1.0).item()}


# --- the exercise check ---------------------------------------------------------------------------------------

class _TinyTrunk(nn.Module):
    """A trunk for the check: features (N, 12) -> (N, 16) through a linear layer, batch norm and ReLU."""

    out_features = 16

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(12, 16), nn.BatchNorm1d(16), nn.ReLU())

    def forward(self, x):
        return self.layers(x)


def _check_setup(seed: int):
    """A fixed float64 ``JointNet`` (4 classes, embedding size 8) and a batch of 16 samples around 4 class centres
    (close enough for the miner to drop some pairs, so that a step without it differs)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = models.JointNet(models.EmbeddingNet(_TinyTrunk(), 8), 4).double()
    images = torch.randn(16, 12, generator=gen, dtype=torch.float64)
    labels = torch.arange(16)[torch.randperm(16, generator=gen)] % 4
    centres = torch.randn(4, 12, generator=gen, dtype=torch.float64)
    return model, images + 1.5 * centres[labels], labels


def _copy_with_stale_gradients(model, seed: int):
    """A copy of ``model`` whose parameters hold gradients left over from a "previous step" (the same per seed)."""
    copied, gen = copy.deepcopy(model), torch.Generator().manual_seed(seed + 100)
    for p in copied.parameters():
        p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
    return copied


def _mistakes(metric_loss, miner, weight):
    """``{description: step}``: reference steps that make one typical mistake each."""
    def step(loss_of):
        def run(model, optimizer, images, labels):
            embeddings, logits = model(images)
            optimizer.zero_grad(set_to_none=True)
            loss_of(embeddings, logits, labels).backward()
            optimizer.step()
        return run

    def no_zero_grad(model, optimizer, images, labels):
        embeddings, logits = model(images)
        joint_loss(embeddings, logits, labels, metric_loss, miner, weight).backward()
        optimizer.step()

    metric = lambda e, y: metric_loss(e, y, miner(e, y))  # noqa: E731
    return {
        "the metric loss is computed on the logits instead of the embeddings":
            step(lambda e, z, y: weight * metric(z, y) + F.cross_entropy(z, y)),
        "the weight multiplies the cross-entropy instead of the metric loss (weight * metric + cross-entropy)":
            step(lambda e, z, y: metric(e, y) + weight * F.cross_entropy(z, y)),
        "the weight is not applied at all (metric + cross-entropy)":
            step(lambda e, z, y: metric(e, y) + F.cross_entropy(z, y)),
        "the miner's pairs are not passed to the metric loss: use "
        "metric_loss(embeddings, labels, miner(embeddings, labels))":
            step(lambda e, z, y: weight * metric_loss(e, y) + F.cross_entropy(z, y)),
        "the cross-entropy is computed on the embeddings instead of the logits":
            step(lambda e, z, y: weight * metric(e, y) + F.cross_entropy(e, y)),
        "the old gradients are not cleared (optimizer.zero_grad() before loss.backward())": no_zero_grad,
    }


def _same_parameters(a, b) -> bool:
    return all(torch.allclose(x, y, rtol=1e-6, atol=1e-9) for x, y in zip(a.parameters(), b.parameters()))


def _count_forward_passes(model) -> list:
    """A list that grows by one each time ``model.embedding_net`` runs (a forward hook)."""
    calls = []
    model.embedding_net.register_forward_hook(lambda *args: calls.append(1))
    return calls


def check_joint_step(joint_training_step, metric_loss=None, miner=None) -> None:
    """Lesson 07: ``joint_training_step(model, metric_loss, miner, optimizer, images, labels, weight)`` makes the
    same step as ``joint_step`` (parameters and batch-norm statistics after one step, and the loss it returns),
    on a fixed model, for several weights; names the typical mistake if it doesn't."""
    from pytorch_metric_learning import losses, miners

    metric_loss = metric_loss or losses.CircleLoss(m=0.4, gamma=80)
    miner = miner or miners.MultiSimilarityMiner(epsilon=0.1)
    for seed, weight in ((0, 0.1), (1, 2.5), (2, 0.01)):
        model, images, labels = _check_setup(seed)
        reference, student = (_copy_with_stale_gradients(model, seed) for _ in range(2))
        expected = joint_step(reference, metric_loss, miner, torch.optim.SGD(reference.parameters(), lr=0.01),
                              images, labels, weight)
        calls = _count_forward_passes(student)
        result = _call(joint_training_step, student, metric_loss, miner, torch.optim.SGD(student.parameters(), lr=0.01),
                       images, labels, weight)
        assert calls, "The model never ran: take the embeddings and the logits from `model(images)`."
        assert len(calls) == 1, (
            f"The model ran {len(calls)} times on one batch: two forward passes. Take the embeddings and the logits "
            f"from ONE call, `embeddings, logits = model(images)`: a second pass costs as much again and, in training "
            f"mode, updates the batch-norm statistics twice.")
        if _same_parameters(student, model):
            raise AssertionError("The parameters did not change: call loss.backward() and then optimizer.step().")
        if not _same_parameters(student, reference):
            for mistake, wrong_step in _mistakes(metric_loss, miner, weight).items():
                other = _copy_with_stale_gradients(model, seed)
                wrong_step(other, torch.optim.SGD(other.parameters(), lr=0.01), images, labels)
                if _same_parameters(student, other):
                    raise AssertionError(f"With weight={weight}, the parameters after your step are exactly those "
                                         f"of a step where {mistake}.")
            raise AssertionError(
                f"With weight={weight}, the parameters after your step differ from the reference step "
                f"`loss = weight * metric_loss(embeddings, labels, miner(embeddings, labels)) + "
                f"cross_entropy(logits, labels)`, one zero_grad, one backward, one optimizer.step().")
        assert all(torch.equal(x, y) for x, y in zip(student.buffers(), reference.buffers())), \
            "The batch-norm statistics differ from the reference step's: run the model once, in training mode."
        assert isinstance(result, (float, int)) or (torch.is_tensor(result) and result.numel() == 1), \
            f"Return the loss as a number (`loss.item()`), not {type(result).__name__}."
        value = float(result.detach()) if torch.is_tensor(result) else float(result)
        assert math.isclose(value, expected, rel_tol=1e-6), \
            f"The step is right, but it returned {value:.6f} instead of the loss {expected:.6f}."
    print("✓ joint_training_step makes the same step as the reference (one forward pass, two losses, one backward, "
          "one optimiser step).")
