"""What the exercise checks of every lesson share: calling the student's function (an unsolved exercise becomes an
AssertionError that says so; an answer that calls the course's reference answer, or the PML class it re-implements,
is refused), random batches, and comparing a loss, value and gradient, with PML's."""
import contextlib

import torch

TRIPWIRE = "def {name}(*args, **kwargs):\n    raise AssertionError({message!r})\n"


def _tripwire(target, message: str):
    """A function that raises an AssertionError saying ``message``, named as ``target``."""
    namespace = {}
    exec(TRIPWIRE.format(name=target.__name__, message=message), namespace)
    return namespace[target.__name__]


@contextlib.contextmanager
def forbidding(fn, forbid):
    """While the student's ``fn`` runs, each ``(owner, name)`` of ``forbid`` (a module's function, or a class's
    method) raises an AssertionError that names it, however the student reached it: a function's code is swapped
    (so that an alias fails too), a method is replaced on its class."""
    undo = []
    try:
        for owner, name in forbid:
            target = getattr(owner, name)
            whose = "PML's" if "pytorch_metric_learning" in getattr(owner, "__module__", "") else "the course's"
            label = f"{getattr(owner, '__name__', owner)}.{name}"
            trip = _tripwire(target, f"{fn.__name__} calls {whose} {label}, the reference this exercise asks you to "
                                     f"write yourself: the check does not accept it.")
            if isinstance(owner, type) or target.__code__.co_freevars:
                undo.append((owner, name, vars(owner).get(name)))
                setattr(owner, name, trip)
            else:
                undo.append((target, "__code__", target.__code__))
                target.__code__ = trip.__code__
        yield
    finally:
        for obj, attribute, value in reversed(undo):
            setattr(obj, attribute, value) if value is not None else delattr(obj, attribute)


def call(fn, *args, forbid=(), **kwargs):
    """``fn(*args, **kwargs)``, the student's function, with the references ``forbid`` names out of its reach
    (see ``forbidding``); an unsolved exercise (``NotImplementedError``) becomes an AssertionError that says so."""
    try:
        with forbidding(fn, forbid):
            return fn(*args, **kwargs)
    except NotImplementedError:
        raise AssertionError(f"{fn.__name__} is not implemented yet: replace `raise NotImplementedError()` "
                             f"with your code.") from None


def random_batch(seed: int, n: int = 24, dim: int = 8, num_classes: int = 4):
    """Seeded random embeddings (n, dim) and labels (n,) in which every class appears several times."""
    gen = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(n, dim, generator=gen) * 3
    labels = torch.arange(n) % num_classes  # every class appears several times
    return embeddings, labels[torch.randperm(n, generator=gen)]


def close(a: float, b: float) -> bool:
    """Whether ``a`` equals ``b`` to a relative (or, near 0, absolute) 1e-5."""
    return abs(a - b) <= 1e-5 * max(1.0, abs(b))


def compare_loss(name, fn, reference, embeddings, labels, kwargs, hints, mistakes=None, gradient_hint=""):
    """Compare a student's loss (value and gradient) with PML's ``reference`` on one batch. ``mistakes``
    maps a description of a typical mistake to a PML loss factory that makes exactly that mistake."""
    student_input = embeddings.clone().requires_grad_(True)
    result = call(fn, student_input, labels, forbid=[(reference, "compute_loss")], **kwargs)
    assert torch.is_tensor(result) and result.numel() == 1, \
        f"{name} should return a scalar tensor, got {type(result).__name__}."
    pml_input = embeddings.clone().requires_grad_(True)
    expected = reference(**kwargs)(pml_input, labels)
    settings = ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "default arguments"
    value, target = result.item(), expected.item()
    if not close(value, target):
        message = f"{name} with {settings}: expected {target:.6f} (PML), got {value:.6f}. "
        for mistake, factory in (mistakes or {}).items():
            if close(value, factory(**kwargs)(embeddings, labels).item()):
                raise AssertionError(message + f"That is exactly what you get if {mistake}.")
        raise AssertionError(message + "Common causes: " + "; ".join(hints) + ".")
    assert result.requires_grad, f"{name}'s result has no gradient: compute it with torch operations only."
    result.backward()
    expected.backward()
    assert torch.allclose(student_input.grad, pml_input.grad, atol=1e-5, rtol=1e-4), \
        f"{name} with {settings}: the value is right but the gradient differs from PML's.{gradient_hint}"


def loss_batches(num_batches: int = 4):
    """Random batches of 16 embeddings: 4 classes and one class of a single sample (no positive), in float64
    so that comparisons to 1e-5 are meaningful."""
    for seed in range(num_batches):
        embeddings, labels = random_batch(100 + seed, n=16, dim=8, num_classes=4)
        labels[-1] = 4
        yield embeddings.double(), labels
