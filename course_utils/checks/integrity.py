"""Whether the code the checks rely on is still the installed code: every function reachable from the course's
modules, PyTorch, NumPy, PML and a few standard modules must come from a file of the Python installation or of this
package, not from a notebook cell. The grader runs ``verify()`` before each check, so that a check cannot pass
because a notebook replaced, say, ``torch.allclose`` or ``plumbing.close`` by a function that always agrees."""
import functools
import sys
import sysconfig
import types
from pathlib import Path

WATCHED = ("builtins", "math", "operator", "functools", "importlib", "numpy", "numpy.random", "numpy.linalg",
           "torch", "torch.nn.functional", "torch.linalg", "torch.random", "pytorch_metric_learning.losses",
           "pytorch_metric_learning.miners", "pytorch_metric_learning.distances",
           "pytorch_metric_learning.utils.common_functions", "pytorch_metric_learning.utils.loss_and_miner_utils")


def trusted_roots() -> tuple:
    """The folders whose files are trusted: the Python installation's and this package's parent."""
    paths = sysconfig.get_paths()
    roots = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    roots |= {sys.prefix, sys.base_prefix, str(Path(__file__).resolve().parent.parent)}
    return tuple(str(Path(root).resolve()) for root in roots)


def _code_file(value):
    """The file a Python-level callable's code comes from, or None for a builtin."""
    if isinstance(value, functools.partial):
        return _code_file(value.func)
    value = getattr(value, "__func__", value)
    code = getattr(value, "__code__", None)
    if isinstance(code, types.CodeType):
        return code.co_filename
    if isinstance(value, type):
        if value.__module__ in sys.builtin_module_names:
            return None
        return getattr(sys.modules.get(value.__module__), "__file__", None) or "<no file>"
    if not isinstance(value, (types.ModuleType, types.BuiltinFunctionType, int, float, str, bytes, tuple, dict)):
        call = getattr(type(value), "__call__", None)
        if isinstance(call, types.FunctionType):
            return call.__code__.co_filename
    return None


def _trusted(path, roots: tuple) -> bool:
    """Whether code from file ``path`` is the installation's: a file under ``roots``, a frozen module, a builtin, or
    the relative source name a compiled (Cython) module records."""
    if path is None or path.startswith(("<frozen ", "<builtin>")):
        return True
    if not path.startswith("<") and not Path(path).is_absolute():
        return True
    return str(Path(path).resolve()).startswith(roots)


def _foreign(owner_name: str, namespace: dict, roots: tuple, skip_dunders: bool = False) -> list:
    """``owner.name`` for each value of ``namespace`` whose code comes from outside ``roots``."""
    found = []
    for name, value in list(namespace.items()):
        if skip_dunders and name.startswith("__"):
            continue  # dataclasses write these from strings
        try:
            path = _code_file(value)
        except Exception:  # an attribute that raises when read
            continue
        if not _trusted(path, roots):
            found.append(f"{owner_name}.{name}")
    return found


def replaced(roots=None) -> list:
    """Every watched name (module attributes, and the methods of the classes they hold) now bound to code from
    outside the trusted folders."""
    roots = roots or trusted_roots()
    modules = [m for m in list(sys.modules) if m in WATCHED or m == "course_utils" or m.startswith("course_utils.")]
    found = []
    for module_name in modules:
        namespace = dict(vars(sys.modules[module_name]))
        found += _foreign(module_name, namespace, roots)
        for name, value in namespace.items():
            if isinstance(value, type) and getattr(value, "__module__", "").startswith(module_name.split(".")[0]):
                found += _foreign(f"{module_name}.{name}", dict(vars(value)), roots, skip_dunders=True)
    if "torch" in sys.modules:
        found += _foreign("torch.Tensor", dict(vars(sys.modules["torch"].Tensor)), roots, skip_dunders=True)
    return sorted(set(found))


def verify() -> None:
    """Raise an AssertionError naming the replaced functions, if any (see ``replaced``)."""
    found = replaced()
    assert not found, ("the notebook replaced code the checks rely on, so no check can be trusted: "
                       + ", ".join(found[:10]) + (" ..." if len(found) > 10 else ""))
