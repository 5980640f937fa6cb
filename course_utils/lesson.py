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
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from filelock import FileLock
from torch.utils.data import TensorDataset

from . import claims, data, evaluation, models, paths, plotting, session, training

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
    """The course's budget for ``config``'s mode; ``full_mode_changes`` (e.g. ``num_epochs=3``) apply in full mode
    only."""
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
        names = lambda classes: ", ".join(data.CLASS_NAMES[c] for c in classes)
        return (f"seen classes:   {names(self.seen)}\nunseen classes: {names(self.unseen)}\n"
                f"training: {len(self.train):,} images of seen classes"
                + (f"; validation: {len(self.valid):,} other images of them" if self.valid else "")
                + "; test: " + ", ".join(f"{len(ds):,} {split}" for split, ds in self.test.items()))


def lesson_data(config, budget: Budget, split: str = "A") -> LessonData:
    """Split ``split`` of Fashion-MNIST (see ``SPLITS``) at ``budget``'s sizes, subsampled with ``config.seed``."""
    return class_split_data(config, budget, *SPLITS[split])


def class_split_data(config, budget: Budget, seen, unseen=()) -> LessonData:
    """The data of any class split at ``budget``'s sizes: training and validation images of ``seen``, test images of
    both (an empty ``unseen`` gives only ``test["seen"]``: all classes seen, as when training on all ten)."""
    train_seen, train_unseen = data.seen_unseen(data.fashion_mnist("train"), seen, unseen)
    test_seen, test_unseen = data.seen_unseen(data.fashion_mnist("test"), seen, unseen)
    test = {"seen": data.subsample(test_seen, budget.eval_per_class, seed=config.seed)}
    if unseen:
        test["unseen"] = data.subsample(test_unseen, budget.eval_per_class, seed=config.seed)
    train, valid = data.split_per_class(train_seen, (budget.train_per_class, budget.valid_per_class), config.seed)
    return LessonData(tuple(seen), tuple(unseen), train, test, train_unseen, valid if budget.valid_per_class else None)


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
    train_seen, held = data.seen_unseen(data.fashion_mnist("train"), train_classes, valid_classes)
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
    batches seeded by ``seed`` (default ``config.seed``) through ``training.fit``; returns ``(model, history)``.

    ``eval_fn(model)``'s metrics join each epoch's row; with ``select_on`` (one of them, e.g. ``"valid map_r"``)
    the model returned is the one of the epoch where it was highest: model selection on validation data
    (lesson 02). ``on_batch(outputs, labels)`` sees each batch before its step (``training.WatchBatches``)."""
    model = new_embedder(budget) if model is None else model
    if init_state is not None:
        model.load_state_dict(init_state)
    optimizer = torch.optim.Adam(model.parameters(), lr=budget.lr)
    loader = data.make_loader(train_set, budget.batch_size, seed=config.seed if seed is None else seed,
                              sampler=sampler)
    callbacks = [training.WatchBatches(on_batch)] if on_batch else []
    callbacks += [training.Track(eval_fn)] if eval_fn else []
    callbacks += [training.BestEpoch(select_on)] if eval_fn and select_on else []
    history = training.fit(model, loss_fn, optimizer, loader, config.device, budget.num_epochs, miner=miner,
                           callbacks=callbacks, progress=progress)
    return model, history


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
            diff = differences(table, method, other, split)
            print(f"{split:>6}, {method} minus {other}: " + format_differences(diff))


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


UNCACHED = ("instructor", "plotting.py")  # code that no cached run executes: editing it keeps the cache


def code_fingerprint(compute=None) -> str:
    """A hash of the code a cached run can execute: the source of every ``course_utils`` module except
    ``UNCACHED``, and of every function outside the package that ``compute`` reaches by name (a notebook's own
    function that a lambda calls, and the functions that one calls, and so on). Editing any of them retrains."""
    root = Path(__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        if path.relative_to(root).parts[0] not in UNCACHED:
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    for source in outside_sources(compute):
        digest.update(source.encode())
    return digest.hexdigest()[:16]


def outside_sources(function) -> list:
    """The sorted sources of ``function`` and of the functions it reaches through its global names, closures and
    defaults, stopping at ``course_utils`` (covered by module) and at anything that is not a Python function."""
    sources, seen, todo = set(), set(), [function]
    while todo:
        obj = todo.pop()
        code = getattr(obj, "__code__", None)
        if code is None or id(obj) in seen or (getattr(obj, "__module__", None) or "").startswith(__package__):
            continue
        seen.add(id(obj))
        try:
            sources.add(inspect.getsource(obj))
        except (OSError, TypeError):  # no source file (an exec'd function): its bytecode
            sources.add(code.co_code.hex())
        codes, names = [code], set()
        while codes:
            current = codes.pop()
            names |= set(current.co_names)
            codes += [c for c in current.co_consts if inspect.iscode(c)]
        todo += [obj.__globals__[n] for n in sorted(names) if n in obj.__globals__]
        todo += [cell.cell_contents for cell in obj.__closure__ or () if _filled(cell)]
        todo += list(obj.__defaults__ or ())
    return sorted(sources)


def _filled(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:  # a closure variable not assigned yet
        return False
    return True


def cached(config, name: str, key: dict, compute):
    """``compute()`` (tables, histories, state dicts), stored under ``build/cache/`` under ``key`` (the settings that
    define the run: ``cache_key``), the device and ``code_fingerprint(compute)``, so a full-mode rerun is instant
    and changed settings or code retrain. Quick mode (the tests) always computes.

    Lessons running at once (``run_course --jobs``) take turns per entry: one computes it while a lock file is
    held, and the others, waiting on that lock, then read it."""
    if config.quick:
        return compute()
    key = json.dumps({"settings": key, "device": str(config.device), "code": code_fingerprint(compute)},
                     sort_keys=True, default=str)
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


def cache_key(budget: Budget, **settings) -> dict:
    """A key for ``cached``: the budget's fields that change a run (not ``UNTRAINED_FIELDS``) and whatever else
    defines it, so lessons that differ only in how many points their pictures show share their runs."""
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


def train_seeds(config, budget: Budget, sets: LessonData, name: str, method, seeds=None) -> list:
    """``method`` trained once per seed (default ``budget.seeds``), each run cached under the name and key that
    ``method.cache_entry`` gives; a method is a ``Method`` or anything with the same three methods
    (``capstone.Recipe``)."""
    runs = []
    for seed in budget.seeds if seeds is None else seeds:
        entry, key = method.cache_entry(name, budget, sets, seed)
        runs.append(cached(config, entry, key, lambda seed=seed: method.train(config, budget, sets, seed)))
    return runs


def compare(config, budget: Budget, sets: LessonData, methods: dict, baselines=None, seeds=None):
    """Train each of ``methods`` (``{name: method}``, or ``{name: (method, its own Budget)}``) with every seed of
    ``budget`` (or ``seeds``) and evaluate on ``sets.test``.

    Returns ``(table, runs)``: a results table (``baselines`` first, e.g. ``{"raw pixels": nn.Flatten()}``; then
    each method's mean with ``f"{metric}_std"`` over seeds) and ``{name: [one dict per seed]}``."""
    runs = {}
    for name, method in methods.items():
        method, method_budget = method if isinstance(method, tuple) else (method, budget)
        runs[name] = train_seeds(config, method_budget, sets, name, method, seeds)
    table = results_table(baselines or {}, sets.test, config.device)
    for name, runs_of_name in runs.items():
        table[name] = mean_std([{name: run["table"]} for run in runs_of_name])[name]
    return table, runs


def network_of(budget: Budget, run: dict, method=None):
    """The embedding network of one run of ``compare`` (its selected epoch's weights), in eval mode: ``method``'s
    network (``new_embedder``'s by default)."""
    net = method.new_network(budget) if method is not None else new_embedder(budget)
    net.load_state_dict(run["state"])
    return net.eval()


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

    def cache_entry(self, name: str, budget: Budget, sets: LessonData, seed: int) -> tuple:
        """``(file name, key)`` of one seed's run in the cache: by name, settings, classes and seed."""
        key = cache_key(budget, method=name, loss=describe(self.loss_fn), miner=describe(self.miner),
                        seen=sets.seen, seed=seed, validation=sets.valid is not None)
        return f"{name}-seed{seed}".replace(" ", "_").replace("/", "_"), key

    def train(self, config, budget: Budget, sets: LessonData, seed: int) -> dict:
        """One seed: train (selecting the epoch on validation data if there is any), evaluate on ``sets.test``;
        returns ``{"seed", "history", "table", "state"}`` with the embedding network's weights."""
        session.seed_everything(seed)
        model = self.make_model(budget) if self.make_model else new_embedder(budget)
        embedding_of = self.embedding_of or (lambda m: m)
        valid = map_r_tracker({"valid": sets.valid}, config.device) if sets.valid is not None else None
        model, history = train_embedder(self.loss_fn, sets.train, budget, config, miner=self.miner, model=model,
                                        eval_fn=(lambda m: valid(embedding_of(m))) if valid else None,
                                        progress=False, seed=seed, select_on="valid map_r" if valid else None,
                                        sampler=self.sampler(sets.train) if self.sampler else None)
        return evaluated_run(embedding_of(model), sets, config, seed, history)

    def new_network(self, budget: Budget) -> models.EmbeddingNet:
        """A fresh embedding network of the shape this method trains, to load a run's ``state`` into."""
        return new_embedder(budget)


def evaluated_run(net, sets: LessonData, config, seed: int, history: list) -> dict:
    """What one seed's run keeps: ``{"seed", "history", "table": net on sets.test (cosine), "state": net's
    weights}``."""
    table = evaluation.evaluate_splits(net, sets.test, config.device, "cosine")
    return {"seed": seed, "history": history, "table": table,
            "state": {k: v.detach().cpu() for k, v in net.state_dict().items()}}


claim = claims.check  # lesson.claim(config, holds, text): a sentence of the lesson checked on its run's numbers
claims_report = claims.report  # the lesson's last cell: which claims held here
