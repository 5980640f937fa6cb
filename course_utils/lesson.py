"""The lesson kit: what every lesson repeats, composed once (lessons 01 on).

One budget for quick and full mode, the seen/unseen data of a class split, training an embedding
network on that budget, a results table on seen and unseen classes, UMAP grids, and the check behind
each claim the prose makes. The training loop itself stays in ``training`` (it is taught in lesson 01).
"""
import hashlib
import inspect
import json
import os
import statistics
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from filelock import FileLock
from torch.utils.data import TensorDataset

from . import claims, data, evaluation, models, paths, plotting, session, training

NOISE = claims.NOISE  # smaller gaps are ties (lesson 00, section 6)
SPLITS = {"A": (data.SEEN_CLASSES, data.UNSEEN_CLASSES),  # tops, trousers, dresses | shoes, bags, shirts
          "B": ((0, 1, 3, 5, 7), (2, 4, 6, 8, 9))}  # lesson 02: T-shirt, trouser, dress, sandal, sneaker | rest


@dataclass(frozen=True)
class Budget:
    """What a lesson spends: images per class, UMAP points, epochs, batch, learning rate, embedding size."""

    train_per_class: int
    eval_per_class: int
    umap_per_class: int
    num_epochs: int
    batch_size: int = 128
    lr: float = 1e-3
    embedding_dim: int = 64
    valid_per_class: int = 0  # held-out training images of the seen classes, for model selection
    seeds: tuple = (0,)  # the seeds a comparison trains each method with


QUICK = Budget(train_per_class=300, eval_per_class=100, umap_per_class=60, num_epochs=1, valid_per_class=50)
FULL = Budget(train_per_class=1500, eval_per_class=1000, umap_per_class=300, num_epochs=2, valid_per_class=500,
              seeds=(0, 1, 2))


def budget(config, **full_mode_changes) -> Budget:
    """The course's budget for ``config``'s mode; ``full_mode_changes`` (e.g. ``num_epochs=3``) apply in full mode only."""
    return QUICK if config.quick else replace(FULL, **full_mode_changes)


@dataclass
class LessonData:
    """The data of one class split: training images of the seen classes, test images of both."""

    seen: tuple
    unseen: tuple
    train: TensorDataset  # training images of the seen classes: the only images any network trains on
    test: dict  # {"seen": ..., "unseen": ...}: test images, for evaluation only
    train_unseen: TensorDataset  # training images of the unseen classes: never trained on (search queries)
    valid: TensorDataset = None  # other training images of the seen classes: for model selection, never trained on

    def __str__(self):
        names = lambda classes: ", ".join(data.CLASS_NAMES[c] for c in classes)  # noqa: E731
        return (f"seen classes:   {names(self.seen)}\nunseen classes: {names(self.unseen)}\n"
                f"training: {len(self.train):,} images of seen classes"
                + (f"; validation: {len(self.valid):,} other images of them" if self.valid else "")
                + "; test: " + ", ".join(f"{len(ds):,} {split}" for split, ds in self.test.items()))


@lru_cache(maxsize=2)
def _fashion_mnist(split: str) -> TensorDataset:
    return data.load_fashion_mnist(split)


def lesson_data(config, budget: Budget, split: str = "A") -> LessonData:
    """Split ``split`` of Fashion-MNIST (see ``SPLITS``) at ``budget``'s sizes, subsampled with ``config.seed``."""
    seen, unseen = SPLITS[split]
    train_seen, train_unseen = data.seen_unseen(_fashion_mnist("train"), seen, unseen)
    test_seen, test_unseen = data.seen_unseen(_fashion_mnist("test"), seen, unseen)
    test = {name: data.subsample(ds, budget.eval_per_class, seed=config.seed)
            for name, ds in (("seen", test_seen), ("unseen", test_unseen))}
    train, valid = data.split_per_class(train_seen, (budget.train_per_class, budget.valid_per_class), config.seed)
    return LessonData(seen, unseen, train, test, train_unseen, valid if budget.valid_per_class else None)


def selection_data(config, budget: Budget, split: str = "A", held_out: int = 2) -> LessonData:
    """Data for choosing between recipes without the test classes (lesson 07): the last ``held_out`` seen classes
    of ``split`` become *validation classes* and play the unseen classes, the other seen classes are trained on.

    Every image is a Fashion-MNIST training image of a seen class: per training class ``budget.train_per_class``
    to train, ``valid_per_class`` to choose the epoch and ``eval_per_class`` as ``test["seen"]``; per validation
    class ``eval_per_class`` as ``test["unseen"]``. No test image and no unseen class is touched."""
    seen = SPLITS[split][0]
    if not 2 <= held_out <= len(seen) - 2:
        raise ValueError(f"held_out must leave at least two classes on each side of {len(seen)} seen classes")
    train_classes, valid_classes = seen[:-held_out], seen[-held_out:]
    train_seen, held = data.seen_unseen(_fashion_mnist("train"), train_classes, valid_classes)
    train, valid, test_seen = data.split_per_class(
        train_seen, (budget.train_per_class, budget.valid_per_class, budget.eval_per_class), config.seed)
    test = {"seen": test_seen, "unseen": data.subsample(held, budget.eval_per_class, seed=config.seed)}
    return LessonData(train_classes, valid_classes, train, test, held, valid if budget.valid_per_class else None)


def new_embedder(budget: Budget) -> models.EmbeddingNet:
    """The course's network: ``ConvTrunk`` and a linear layer to ``budget.embedding_dim``, freshly initialised."""
    return models.EmbeddingNet(models.ConvTrunk(), budget.embedding_dim)


def train_embedder(loss_fn, train_set, budget: Budget, config, miner=None, model=None, init_state=None,
                   eval_fn=None, progress: bool = True, seed=None, select_on=None, sampler=None, on_batch=None):
    """Train ``model`` (default: a new embedder, loaded from ``init_state`` if given) on ``budget`` with Adam and
    batches seeded by ``seed`` (default ``config.seed``); returns ``(model, history)`` as ``training.fit`` writes it.

    With ``select_on`` (a key of ``eval_fn``'s metrics, e.g. ``"valid map_r"``) the model returned is the one of
    the epoch where that metric was highest: model selection on validation data (lesson 02)."""
    model = new_embedder(budget) if model is None else model
    if init_state is not None:
        model.load_state_dict(init_state)
    optimizer = torch.optim.Adam(model.parameters(), lr=budget.lr)
    loader = data.make_loader(train_set, budget.batch_size, seed=config.seed if seed is None else seed,
                              sampler=sampler)
    best = _BestEpoch(model, eval_fn, select_on)
    history = training.fit(model, loss_fn, miner, optimizer, loader, config.device, budget.num_epochs,
                           eval_fn=best if eval_fn else None, progress=progress, on_batch=on_batch)
    return best.restore(history), history


class _BestEpoch:
    """An ``eval_fn`` wrapper that keeps a copy of the weights of the best epoch by ``select_on``."""

    def __init__(self, model, eval_fn, select_on):
        self.model, self.eval_fn, self.select_on, self.best, self.state = model, eval_fn, select_on, None, None

    def __call__(self, model):
        metrics = self.eval_fn(model)
        if self.select_on and (self.best is None or metrics[self.select_on] > self.best):
            self.best = metrics[self.select_on]
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return metrics

    def restore(self, history):
        """Load the best epoch's weights, mark that epoch in ``history``; return the model."""
        if self.state is not None:
            self.model.load_state_dict(self.state)
            for row in history:
                row["selected"] = row[self.select_on] == self.best
        return self.model


def validation_and_test(sets: LessonData) -> dict:
    """The sets a training run tracks: ``{"valid": ..., "seen": ..., "unseen": ...}`` (validation if there is one)."""
    return ({"valid": sets.valid} if sets.valid is not None else {}) | sets.test


def map_r_tracker(test_sets: dict, device, distance: str = "cosine"):
    """An ``eval_fn`` for ``training.fit``: MAP@R on each test set, as ``{"seen map_r": ..., ...}``."""
    def track(model):
        metrics = evaluation.evaluate_splits(model, test_sets, device, distance)
        return {f"{split} map_r": m["map_r"] for split, m in metrics.items()}
    return track


def results_table(embedders: dict, test_sets: dict, device, distance: str = "cosine") -> dict:
    """``{name: {split: {"p1", "r_precision", "map_r"}}}`` for each embedding network (or ``nn.Flatten()``)."""
    return {name: evaluation.evaluate_splits(model, test_sets, device, distance) for name, model in embedders.items()}


def differences(table: dict, method: str, baseline: str, split: str) -> dict:
    """``{metric: table[method] - table[baseline]}`` on one split of a results table."""
    return {m: table[method][split][m] - table[baseline][split][m] for m in evaluation.METRICS}


def format_differences(diff: dict) -> str:
    """One line for a ``{metric: difference}`` dict, such as ``P@1 +0.012, R-Prec -0.003, MAP@R +0.020``."""
    return ", ".join(f"{evaluation.DISPLAY_NAMES[m]} {v:+.3f}" for m, v in diff.items())


def print_differences(table: dict, method: str, others: list, splits=("seen", "unseen")) -> None:
    """Print ``method minus other`` on each split, for each of ``others`` (methods or baselines of a results table)."""
    for other in others:
        for split in splits:
            print(f"{split:>6}, {method} minus {other}: " + format_differences(differences(table, method, other, split)))


def umap_grid(embedders: dict, test_sets: dict, config, per_class: int, distance: str = "cosine",
              class_names=data.CLASS_NAMES):
    """UMAP pictures: one column per embedding network, one row per test set, the same images in each row."""
    samples = {split: data.subsample(ds, per_class, seed=config.seed) for split, ds in test_sets.items()}
    fig, axes = plt.subplots(len(samples), len(embedders), squeeze=False,
                             figsize=(4.5 * len(embedders), 4.2 * len(samples)))
    for col, (name, model) in enumerate(embedders.items()):
        for row, (split, ds) in enumerate(samples.items()):
            embeddings, labels = evaluation.embed(model, ds, config.device)
            plotting.umap_scatter(embeddings, labels, class_names, distance=distance, seed=config.seed,
                                  ax=axes[row, col], title=f"{name} — {split} classes", legend=col == 0)
    fig.tight_layout()
    return fig


def mean_std(tables: list) -> dict:
    """Results tables of several seeds -> one table of means, with ``f"{metric}_std"`` (0 for one seed) beside."""
    first = tables[0]
    out = {}
    for method in first:
        out[method] = {}
        for split in first[method]:
            runs = {m: [t[method][split][m] for t in tables] for m in first[method][split]}
            out[method][split] = {k: v for m, values in runs.items() for k, v in (
                (m, statistics.fmean(values)), (f"{m}_std", statistics.stdev(values) if len(values) > 1 else 0.0))}
    return out


def over_seeds(run, budget: Budget) -> dict:
    """``run(seed) -> results table`` for each of ``budget.seeds`` (each after ``seed_everything(seed)``);
    returns the mean and standard deviation over seeds, as ``mean_std`` writes them."""
    tables = []
    for seed in budget.seeds:
        session.seed_everything(seed)
        tables.append(run(seed))
    return mean_std(tables)


FINGERPRINTED = ("data", "evaluation", "models", "session", "training")  # the foundation a training run runs
KIT_TRAINING = ("Budget", "QUICK", "FULL", "SPLITS", "LessonData", "_fashion_mnist", "lesson_data", "new_embedder",
                "train_embedder", "_BestEpoch", "map_r_tracker", "recipe", "describe", "Method", "_train_one",
                "train_seeds", "cached", "UNTRAINED_FIELDS")  # the kit's code behind a cached training run


def _code_fingerprint() -> str:
    """A hash of the foundation modules and of the kit's training code: a change to the code that trains and
    evaluates invalidates the cache, while a new printing or plotting helper in the kit does not (a topic
    module's own recipes must name their settings in the recipe)."""
    digest = hashlib.sha256()
    for name in FINGERPRINTED:
        digest.update((Path(__file__).parent / f"{name}.py").read_bytes())
    kit = globals()
    for name in KIT_TRAINING:
        obj = kit[name]
        digest.update((inspect.getsource(obj) if callable(obj) else repr(obj)).encode())
    return digest.hexdigest()[:16]


def cached(config, name: str, recipe: dict, compute):
    """``compute()`` (tables, histories, state dicts), stored under ``build/cache/`` keyed by ``recipe`` and the
    code, so a full-mode rerun is instant and a changed recipe retrains. Quick mode (the tests) always computes.

    Lessons running at once (``run_course --jobs``) take turns per entry: one computes it while a lock file is
    held, and the others, waiting on that lock, then read it."""
    if config.quick:
        return compute()
    key = json.dumps({"recipe": recipe, "device": str(config.device), "code": _code_fingerprint()}, sort_keys=True,
                     default=str)
    path = paths.course_root() / "build" / "cache" / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        if path.is_file():
            print(f"(from the cache: {path.name}; delete build/cache/ to retrain)")
            return torch.load(path, weights_only=True)
        result = compute()
        torch.save(result, f"{path}.partial")
        os.replace(f"{path}.partial", path)  # never a half-written entry, even if the lesson is stopped
    return result


UNTRAINED_FIELDS = ("umap_per_class",)  # budget fields no training run reads: not part of a cache key


def recipe(budget: Budget, **settings) -> dict:
    """A cache key for ``cached``: the budget's fields that change a run (not ``UNTRAINED_FIELDS``) and whatever
    else defines it, so lessons that differ only in how many points their pictures show share their runs."""
    fields = {k: v for k, v in asdict(budget).items() if k not in UNTRAINED_FIELDS}
    return {**fields, **settings}


def describe(obj):
    """A PML loss, miner or distance as plain settings (its class and number/text attributes), for cache keys."""
    if obj is None:
        return None
    per_call = {"num_pos_pairs", "num_neg_pairs", "num_triplets", *getattr(obj, "_record_these_stats", [])}
    settings = {k: v for k, v in vars(obj).items()  # not what PML counts on each call (a miner's num_pos_pairs)
                if isinstance(v, (int, float, str, bool)) and k not in per_call}
    children = {name: describe(child) for name, child in getattr(obj, "named_children", lambda: [])()}
    return {"class": type(obj).__name__, **settings, **children}


@dataclass
class Method:
    """One way to train: a PML loss and miner, and optionally the model to train (``make_model(budget)``), its
    embedding network (``embedding_of(model)``, e.g. a classifier's ``embedding_net``) and a batch sampler
    (``sampler(train_set)``, lesson 06). Defaults: ``new_embedder``, the model itself, random batches."""

    loss_fn: object
    miner: object = None
    make_model: object = None
    embedding_of: object = None
    sampler: object = None


def _train_one(config, budget: Budget, sets: LessonData, method: Method, seed: int) -> dict:
    """One seed of one method: train (selecting the epoch on validation data if there is any), evaluate on
    ``sets.test``; returns ``{"seed", "history", "table", "state"}`` with the embedding network's weights."""
    session.seed_everything(seed)
    model = method.make_model(budget) if method.make_model else new_embedder(budget)
    embedding_of = method.embedding_of or (lambda m: m)
    valid = map_r_tracker({"valid": sets.valid}, config.device) if sets.valid is not None else None
    model, history = train_embedder(method.loss_fn, sets.train, budget, config, miner=method.miner, model=model,
                                    eval_fn=(lambda m: valid(embedding_of(m))) if valid else None, progress=False,
                                    seed=seed, select_on="valid map_r" if valid else None,
                                    sampler=method.sampler(sets.train) if method.sampler else None)
    net = embedding_of(model)
    return {"seed": seed, "history": history, "table": evaluation.evaluate_splits(net, sets.test, config.device, "cosine"),
            "state": {k: v.detach().cpu() for k, v in net.state_dict().items()}}


def train_seeds(config, budget: Budget, sets: LessonData, name: str, method: Method) -> list:
    """``method`` trained once per seed of ``budget`` (each run cached by name, settings, classes and seed)."""
    runs = []
    for seed in budget.seeds:
        key = recipe(budget, method=name, loss=describe(method.loss_fn), miner=describe(method.miner),
                     seen=sets.seen, seed=seed, validation=sets.valid is not None)
        runs.append(cached(config, f"{name}-seed{seed}".replace(" ", "_").replace("/", "_"), key,
                           lambda seed=seed: _train_one(config, budget, sets, method, seed)))
    return runs


def compare(config, budget: Budget, sets: LessonData, methods: dict, baselines=None):
    """Train each of ``methods`` (``{name: Method}``) with every seed of ``budget`` and evaluate on ``sets.test``.

    Returns ``(table, runs)``: a results table (``baselines`` first, e.g. ``{"raw pixels": nn.Flatten()}``; then
    each method's mean with ``f"{metric}_std"`` over seeds) and ``{name: [one dict per seed]}``."""
    runs = {name: train_seeds(config, budget, sets, name, method) for name, method in methods.items()}
    table = results_table(baselines or {}, sets.test, config.device)
    for name, seed_runs in runs.items():
        table[name] = mean_std([{name: run["table"]} for run in seed_runs])[name]
    return table, runs


def embedder_of(budget: Budget, run: dict) -> models.EmbeddingNet:
    """The embedding network of one run of ``compare`` (its selected epoch's weights)."""
    net = new_embedder(budget)
    net.load_state_dict(run["state"])
    return net


def margin(table: dict, a: str, b: str, split: str, metric: str = "map_r") -> float:
    """How far a difference must go to count: the noise between machines, or the two methods' seed spreads
    added, whichever is larger."""
    spread = table[a][split].get(f"{metric}_std", 0.0) + table[b][split].get(f"{metric}_std", 0.0)
    return max(NOISE, spread)


def _difference(table: dict, a: str, b: str, split: str, metric: str) -> tuple:
    """``a`` minus ``b`` and the margin it must pass, noted for the next claim (``claims.note``)."""
    diff, needed = table[a][split][metric] - table[b][split][metric], margin(table, a, b, split, metric)
    claims.note(f"{a} − {b}, {split} {metric}: {diff:+.3f} (margin {needed:.3f})")
    return diff, needed


def wins(table: dict, a: str, b: str, split: str, metric: str = "map_r") -> bool:
    """True when ``a`` beats ``b`` on ``split`` by more than ``margin``: a win that survives noise and seeds."""
    diff, needed = _difference(table, a, b, split, metric)
    return diff > needed


def ties(table: dict, a: str, b: str, split: str, metric: str = "map_r") -> bool:
    """True when neither ``a`` nor ``b`` wins: their difference is within ``margin``."""
    diff, needed = _difference(table, a, b, split, metric)
    return abs(diff) <= needed


def clearly_ahead(a: float, b: float, noise: float = NOISE) -> bool:
    """True when ``a`` beats ``b`` by more than the noise between runs: only then is it a win."""
    claims.note(f"{a:.3f} − {b:.3f} = {a - b:+.3f} (margin {noise:.3f})")
    return a - b > noise


def tie(a: float, b: float, noise: float = NOISE) -> bool:
    """True when ``a`` and ``b`` differ by no more than the noise between runs."""
    claims.note(f"{a:.3f} − {b:.3f} = {a - b:+.3f} (margin {noise:.3f})")
    return abs(a - b) <= noise


claim = claims.check  # lesson.claim(config, holds, text): a sentence of the lesson checked on its run's numbers
claims_report = claims.report  # the lesson's last cell: which claims held here
