"""A metric learning reality check: many methods on one protocol and one budget, and the levers of a training
recipe, each measured on its own: augmentation, embedding size, a wider trunk, a learning-rate schedule, training
length, the joint loss weight and which classes are seen (lesson 08).

Every run here trains a ``models.JointNet`` with ``joint.joint_loss``: cross-entropy only is ``weight=0``, a metric
loss only is ``ce_weight=0``, and the course's recipe is both. Everything that defines a run is in its ``Recipe``
and its ``lesson.Budget``; both and the classes key the cache (``lesson.cached``, which also hashes the code).
"""
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from . import ann, claims, data, evaluation, joint, lesson, models, plotting, session, training

NUM_CLASSES = len(data.CLASS_NAMES)  # the classifier head has one output per Fashion-MNIST class


class Augment(nn.Module):
    """Random horizontal flips (with probability ``flip``), shifts of up to ``shift`` pixels and erased squares
    (probability ``erase``), drawn per image, on a batch (N, C, H, W) in training mode; each is off by default, and
    the whole module is the identity in eval mode, so evaluation never sees it."""

    def __init__(self, flip: float = 0.0, shift: int = 0, erase: float = 0.0, erase_size: tuple = (4, 10)):
        super().__init__()
        self.flip, self.shift, self.erase, self.erase_size = flip, shift, erase, tuple(erase_size)

    def forward(self, x):
        if not self.training:
            return x
        if self.flip:
            flipped = torch.rand(len(x), device=x.device) < self.flip
            x = torch.where(flipped[:, None, None, None], x.flip(-1), x)
        if self.shift:
            x = shift_images(x, torch.randint(-self.shift, self.shift + 1, (len(x), 2), device=x.device))
        if self.erase:
            x = x.masked_fill(erase_masks(x, self.erase, self.erase_size), 0.0)
        return x


def shift_images(x, offsets):
    """Each image of x (N, C, H, W) moved by its whole-pixel ``offsets`` (N, 2) as (dx, dy); the border pixels
    (background in Fashion-MNIST) fill what is uncovered."""
    n, _, h, w = x.shape
    rows = (torch.arange(h, device=x.device)[None, :] - offsets[:, 1:2]).clamp(0, h - 1)  # (N, H)
    cols = (torch.arange(w, device=x.device)[None, :] - offsets[:, 0:1]).clamp(0, w - 1)  # (N, W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    return x.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def erase_masks(x, p: float, size: tuple):
    """Boolean masks (N, 1, H, W): with probability ``p`` per image, one square of side in ``size`` at random."""
    n, _, h, w = x.shape
    side = torch.randint(size[0], size[1] + 1, (n, 1), device=x.device)
    top = (torch.rand(n, 1, device=x.device) * (h - side + 1)).long()
    left = (torch.rand(n, 1, device=x.device) * (w - side + 1)).long()
    ys, xs = torch.arange(h, device=x.device)[None, :], torch.arange(w, device=x.device)[None, :]
    inside_y, inside_x = (ys >= top) & (ys < top + side), (xs >= left) & (xs < left + side)  # (N, H), (N, W)
    chosen = (torch.rand(n, device=x.device) < p)[:, None, None]
    return (inside_y[:, :, None] & inside_x[:, None, :] & chosen)[:, None]


class Augmented(nn.Module):
    """An embedding network with ``Augment`` in front: images -> embeddings (N, embedding_dim); ``net`` alone is
    the network to keep, since the augmentation does nothing in eval mode."""

    def __init__(self, net: nn.Module, augment: nn.Module):
        super().__init__()
        self.augment, self.net, self.embedding_dim = augment, net, net.embedding_dim

    def forward(self, x):
        return self.net(self.augment(x))


class WideTrunk(nn.Module):
    """``ConvTrunk`` made wider and deeper: ``depth`` conv-batch-norm-ReLU layers per block, then max pooling;
    then global average pooling, images (N, 1, 28, 28) -> features (N, widths[-1]), or with ``keep_layout`` the
    last feature map flattened, (N, widths[-1] * 3 * 3) for three blocks: where things are in the image survives."""

    def __init__(self, in_channels: int = 1, widths=(64, 128, 256), depth: int = 2, keep_layout: bool = False,
                 image_size: int = 28):
        super().__init__()
        layers, channels = [], in_channels
        for width in widths:
            for _ in range(depth):
                layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                           nn.ReLU(inplace=True)]
                channels = width
            layers.append(nn.MaxPool2d(2))
        side = image_size // 2 ** len(widths) if keep_layout else 1
        pool = [] if keep_layout else [nn.AdaptiveAvgPool2d(1)]
        self.layers = nn.Sequential(*layers, *pool, nn.Flatten())
        self.out_features = channels * side * side

    def forward(self, x):
        return self.layers(x)


def layout_trunk() -> WideTrunk:
    """``ConvTrunk``'s three blocks with the last feature map flattened instead of averaged: (N, 1, 28, 28) ->
    (N, 1152), 128 channels at each of 3 x 3 places."""
    return WideTrunk(widths=(32, 64, 128), depth=1, keep_layout=True)


def wide_trunk() -> WideTrunk:
    """``ConvTrunk`` one and a half times as wide, with two conv layers per block: (N, 1, 28, 28) -> (N, 192)."""
    return WideTrunk(widths=(48, 96, 192), depth=2)


TRUNKS = {"conv": models.ConvTrunk, "wide": wide_trunk, "layout": layout_trunk}  # a recipe names its trunk


@dataclass
class Recipe:
    """What a training run does besides the data and the ``lesson.Budget`` (epochs, batch, lr, embedding size):
    the loss ``weight * metric_loss + ce_weight * cross-entropy`` (PML's loss and miner, handed in), the trunk
    (``TRUNKS``), the augmentation (``Augment``'s settings, or None) and the learning-rate schedule."""

    metric_loss: object = None
    miner: object = None
    weight: float = 0.0
    ce_weight: float = 1.0
    trunk: str = "conv"
    augment: dict = None
    schedule: str = "constant"  # or "onecycle": warm up for 10% of the steps, then cosine down to ~0

    def settings(self) -> dict:
        """The recipe as plain settings (PML objects through ``lesson.describe``): for cache keys and JSON."""
        return {**asdict(replace(self, metric_loss=None, miner=None)), "metric_loss": lesson.describe(self.metric_loss),
                "miner": lesson.describe(self.miner)}

    def cache_entry(self, name: str, budget: lesson.Budget, sets: lesson.LessonData, seed: int) -> tuple:
        """``(file name, key)`` of one seed's run for ``lesson.cached``: keyed by ``run_key`` alone, not by
        ``name``, so one run under two names (a lever, then the chosen recipe) trains once."""
        return f"08-run-seed{seed}", run_key(self, sets, budget, seed)

    def train(self, config, budget: lesson.Budget, sets: lesson.LessonData, seed: int) -> dict:
        """One seed's run (``train``), as ``lesson.compare`` calls it."""
        return train(self, sets, budget, config, seed)

    def new_network(self, budget: lesson.Budget) -> models.EmbeddingNet:
        """A fresh embedding network of this recipe's trunk, to load a run's ``state`` into."""
        return make_embedder(self, budget.embedding_dim)


def make_embedder(recipe: Recipe, embedding_dim: int) -> models.EmbeddingNet:
    """The recipe's trunk and a linear layer to ``embedding_dim``, freshly initialised."""
    return models.EmbeddingNet(TRUNKS[recipe.trunk](), embedding_dim)


def make_model(recipe: Recipe, embedding_dim: int) -> models.JointNet:
    """The network a recipe trains: its embedder (behind ``Augment`` if it augments) with a 10-class head."""
    net = make_embedder(recipe, embedding_dim)
    if recipe.augment is not None:
        net = Augmented(net, Augment(**recipe.augment))
    return models.JointNet(net, NUM_CLASSES)


def embedding_net(model: models.JointNet) -> models.EmbeddingNet:
    """The embedding network of a ``make_model`` network, without the head and the augmentation."""
    net = model.embedding_net
    return net.net if isinstance(net, Augmented) else net


def schedule(recipe: Recipe, optimizer, total_steps: int) -> list:
    """The recipe's learning-rate schedule as ``training.fit`` callbacks, stepped once per batch (none for a
    constant rate)."""
    if recipe.schedule == "constant":
        return []
    if recipe.schedule == "onecycle":
        return [training.Schedule(torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=optimizer.param_groups[0]["lr"], total_steps=total_steps, pct_start=0.1))]
    raise ValueError(f"unknown schedule {recipe.schedule!r}: use 'constant' or 'onecycle'")


def train(recipe: Recipe, sets: lesson.LessonData, budget: lesson.Budget, config, seed: int) -> dict:
    """Train one network with Adam on ``budget`` (``training.fit`` with ``joint.JointLoss``), keep the epoch with
    the best MAP@R on ``sets.valid`` and evaluate it on ``sets.test`` (cosine); returns ``{"seed", "history",
    "table", "state"}`` as ``lesson.compare``'s runs hold them (``state``: the embedding network's weights)."""
    session.seed_everything(seed)
    model = models.on_device(make_model(recipe, budget.embedding_dim), config.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=budget.lr)
    loader = data.make_loader(sets.train, budget.batch_size, seed=seed)
    track = lesson.map_r_tracker({"valid": sets.valid}, config.device)
    callbacks = [*schedule(recipe, optimizer, budget.num_epochs * len(loader)),
                 training.Track(lambda m: track(embedding_net(m))), training.BestEpoch("valid map_r")]
    loss_fn = joint.JointLoss(recipe.metric_loss, recipe.miner, recipe.weight, recipe.ce_weight)
    history = training.fit(model, loss_fn, optimizer, loader, config.device, budget.num_epochs, callbacks=callbacks,
                           progress=False)
    return lesson.evaluated_run(embedding_net(model), sets, config, seed, history)


def run_key(recipe: Recipe, sets: lesson.LessonData, budget: lesson.Budget, seed: int) -> dict:
    """Everything that defines one run, for ``lesson.cached``: budget, recipe, classes, data sizes and seed."""
    sizes = {"train": len(sets.train), "valid": len(sets.valid), **{k: len(v) for k, v in sets.test.items()}}
    return lesson.cache_key(replace(budget, seeds=None), **recipe.settings(), seen=sets.seen, unseen=sets.unseen,
                            sizes=sizes, seed=seed)


# --- reading the results ----------------------------------------------------------------------------------------

def lever_effects(table: dict, base: str, names, split: str = "unseen", metrics=("p1", "map_r")) -> dict:
    """``{name: {metric: (difference from base, clear)}}`` for each of ``names`` (rows of ``table``): what each lever
    bought, and whether the difference beats ``claims.threshold`` (``clear``: +1 a win, -1 a loss, 0 a tie)."""
    effects = {}
    for name in names:
        if name != base:
            effects[name] = {m: (table[name][split][m] - table[base][split][m],
                                 int(claims.wins(table, name, base, split, m))
                                 - int(claims.wins(table, base, name, split, m)))
                             for m in metrics}
    return effects


def format_effects(effects: dict, base: str) -> str:
    """``lever_effects`` as lines such as ``embedding 128: P@1 +0.004 (tie), MAP@R +0.031 (win)``."""
    verdict = {1: "win", 0: "tie", -1: "loss"}
    return "\n".join(f"{name} vs {base}: " + ", ".join(f"{evaluation.DISPLAY_NAMES[m]} {d:+.3f} ({verdict[c]})"
                                                      for m, (d, c) in row.items()) for name, row in effects.items())


def resolved_pairs(table: dict, names, split: str, metric: str = "map_r") -> tuple:
    """``(wins, ties)``: the pairs ``(a, b)`` of ``names`` where ``a`` clearly beats ``b`` (``claims.wins``), and the
    pairs the table cannot tell apart (``claims.ties``), on one split and metric."""
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    wins = [(a, b) if table[a][split][metric] > table[b][split][metric] else (b, a) for a, b in pairs
            if not claims.ties(table, a, b, split, metric)]
    return wins, [pair for pair in pairs if claims.ties(table, *pair, split, metric)]


def choose_levers(effects: dict) -> list:
    """The rule of lesson 08, fixed before the measurement: keep every lever that clearly won on the validation
    classes by P@1 or MAP@R and clearly lost on neither (``effects`` from ``lever_effects``); largest MAP@R gain
    first, the order in which ``combine`` applies them."""
    kept = [name for name, row in effects.items()
            if any(clear > 0 for _, clear in row.values()) and all(clear >= 0 for _, clear in row.values())]
    return sorted(kept, key=lambda name: -effects[name]["map_r"][0])


def combine(levers: dict, base: str, kept, budget: lesson.Budget) -> tuple:
    """``(recipe, budget)``: the ``base`` lever with the settings that the ``kept`` levers change (each lever a
    ``Recipe`` or ``(Recipe, Budget)``, one change from base). The first kept lever to change a setting sets it
    (two trunks cannot both be used); augmentations are merged."""
    split = lambda lever: lever if isinstance(lever, tuple) else (lever, budget)
    base_recipe, base_budget = split(levers[base])
    recipe, settings, taken = {}, {}, set()
    for name in kept:
        lever_recipe, lever_budget = split(levers[name])
        changed = {k: v for k, v in vars(lever_recipe).items() if v is not getattr(base_recipe, k)
                   and v != getattr(base_recipe, k)}
        changed_budget = {k: v for k, v in asdict(lever_budget).items() if v != getattr(base_budget, k)}
        if "augment" in changed:
            recipe["augment"] = {**recipe.get("augment", {}), **changed.pop("augment")}
        for target, new in ((recipe, changed), (settings, changed_budget)):
            target.update({k: v for k, v in new.items() if k not in taken})
        taken |= set(changed) | set(changed_budget)
    return replace(base_recipe, **recipe), replace(base_budget, **settings)


def benchmark_bars(table: dict, metrics=evaluation.METRICS, title=None):
    """One panel per metric, grouped bars (seen, unseen) per method, error bars of one std over seeds."""
    fig, axes = plt.subplots(len(metrics), 1, figsize=(max(8, 1.3 * len(table)), 3.2 * len(metrics)), sharex=True)
    for ax, metric in zip(np.atleast_1d(axes), metrics):
        plotting.metric_bars(table, metric, ax=ax, title=evaluation.DISPLAY_NAMES[metric],
                             ylabel=f"{evaluation.DISPLAY_NAMES[metric]} (mean ± std)")
        ax.tick_params(axis="x", labelrotation=20)
    fig.suptitle(title or "One protocol, one budget: retrieval with cosine distance")
    fig.tight_layout()
    return fig


def effects_plot(effects: dict, title=None, ax=None):
    """Horizontal bars: each lever's change of validation-class P@1 and MAP@R against the base recipe, with the
    band of ``claims.NOISE`` around zero where a difference is a tie."""
    fig, ax = plotting.figure_and_axes(ax, (7, 0.5 * len(effects) + 1.5))
    names = list(effects)
    for i, (metric, color) in enumerate((("p1", "tab:orange"), ("map_r", "tab:green"))):
        ax.barh(np.arange(len(names)) + (i - 0.5) * 0.38, [effects[n][metric][0] for n in names], 0.38, color=color,
                label=evaluation.DISPLAY_NAMES[metric])
    ax.axvspan(-claims.NOISE, claims.NOISE, color="grey", alpha=0.15, label=f"noise (±{claims.NOISE})")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set(yticks=np.arange(len(names)), yticklabels=names, xlabel="change against the base recipe",
           title=title or "What each lever bought")
    ax.invert_yaxis()
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def curve_plot(xs, table: dict, names: dict, reference: dict = None, xlabel: str = "", title=None, ax=None):
    """Unseen-class P@1 and MAP@R (mean ± std) of the rows ``names`` (``{x: row name}``) against x, with a
    dashed line per metric for ``reference`` rows (``{x: row name}``, e.g. raw pixels on the same classes)."""
    fig, ax = plotting.figure_and_axes(ax, (6, 3.8))
    for metric, color in (("p1", "tab:orange"), ("map_r", "tab:green")):
        rows = [table[names[x]]["unseen"] for x in xs]
        ax.errorbar(xs, [r[metric] for r in rows], [r.get(f"{metric}_std", 0) for r in rows], marker="o", capsize=3,
                    color=color, label=f"trained, {evaluation.DISPLAY_NAMES[metric]}")
        if reference:
            ax.plot(xs, [table[reference[x]]["unseen"][metric] for x in xs], "--", color=color,
                    label=f"raw pixels, {evaluation.DISPLAY_NAMES[metric]}")
    ax.set(xlabel=xlabel, ylabel="P@1 and MAP@R on the unseen classes", title=title, xticks=list(xs))
    ax.legend(fontsize=8)
    return fig


def worst_queries(embeddings, labels, k: int = 8, n: int = 4):
    """The ``n`` queries with the fewest same-class images among their ``k`` nearest others (cosine), and the
    neighbours (n, k) of those queries: the retrieval's worst failures."""
    _, neighbours = evaluation.top_k(embeddings, embeddings, k, "cosine", exclude_self=True)
    hits = (labels[neighbours] == labels[:, None]).sum(1)
    worst = torch.argsort(hits, stable=True)[:n]
    return worst, neighbours[worst]


# --- export: the network, its recipe and a faiss index of its embeddings -----------------------------------------

def export(folder, net: models.EmbeddingNet, recipe: dict, embeddings, labels) -> Path:
    """Write ``model.pt`` (the state dict), ``recipe.json``, ``index.faiss`` (``ann.cosine_index`` of the embeddings
    (N, D)) and ``labels.npy`` to ``folder``; returns the folder."""
    import faiss

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), folder / "model.pt")
    (folder / "recipe.json").write_text(json.dumps(recipe, indent=2, sort_keys=True, default=str) + "\n")
    faiss.write_index(ann.cosine_index(embeddings), str(folder / "index.faiss"))
    np.save(folder / "labels.npy", labels.numpy())
    return folder


def load_export(folder):
    """``(net, recipe, index, labels)`` from an ``export`` folder: the network rebuilt from ``recipe.json``'s
    ``trunk`` and ``embedding_dim``, in eval mode."""
    import faiss

    folder = Path(folder)
    recipe = json.loads((folder / "recipe.json").read_text())
    net = models.EmbeddingNet(TRUNKS[recipe["trunk"]](), recipe["embedding_dim"])
    net.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
    index, labels = faiss.read_index(str(folder / "index.faiss")), torch.from_numpy(np.load(folder / "labels.npy"))
    return net.eval(), recipe, index, labels


def search(net, index, images, k: int = 8):
    """The ``k`` most similar indexed embeddings of each image (N, 1, H, W): (similarities (N, k), ids (N, k))."""
    with torch.inference_mode():
        return ann.cosine_search(index, net.eval()(images), k)
