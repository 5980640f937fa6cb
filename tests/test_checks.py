"""The exercise checks' package: one module per lesson with exercises, each naming its lesson and loaded only when
used; the notebooks call the checks of their own lesson; the checks import the topic modules, never the other way
round; no module of course_utils imports another module's private name."""
import ast
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course_utils import checks

PACKAGE = Path(checks.__file__).parent
COURSE_UTILS = PACKAGE.parent
LESSONS = [name for name in checks.__all__ if name.startswith("lesson")]


def imports(path):
    """``(module, name)`` for each import of a file: ``("..x", "y")`` for ``from ..x import y``, ``(x, None)``
    for ``import x``."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield from (("." * node.level + (node.module or ""), alias.name) for alias in node.names)


def test_the_package_lists_its_modules():
    assert sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__") == sorted(checks.__all__)


def test_importing_the_package_loads_no_check_until_used():
    code = ("import sys; from course_utils import checks; "
            "loaded = lambda: sorted(m for m in sys.modules if m.startswith('course_utils.checks.')); "
            "assert loaded() == [], loaded(); checks.lesson05.check_ms_mine; "
            "assert 'course_utils.checks.lesson05' in loaded() and 'course_utils.checks.lesson07' not in loaded()")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    with pytest.raises(AttributeError, match="lesson08"):
        checks.lesson08


@pytest.mark.parametrize("name", LESSONS)
def test_a_lesson_module_names_its_lesson_and_defines_its_checks(name):
    module = getattr(checks, name)
    assert module.__doc__.startswith(f"Lesson {name[-2:]}'s exercise check"), module.__doc__
    own = [n for n, f in vars(module).items()
           if n.startswith("check_") and getattr(f, "__module__", "") == module.__name__]
    assert own, f"{name} defines no check"


def test_notebooks_call_the_checks_of_their_own_lesson():
    used = set()
    for path in sorted((COURSE_UTILS.parent / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type != "code":
                continue
            for owner, name in re.findall(r"([\w.]+)\.(check_\w+)\(", cell.source):
                module = owner.removeprefix("checks.")
                assert owner.startswith("checks.") and module in (f"lesson{path.name[:2]}", "experiments"), \
                    f"{path.name} calls {owner}.{name}: a check of lesson NN lives in checks.lessonNN"
                assert callable(getattr(getattr(checks, module), name, None)), f"{path.name}: no {owner}.{name}"
                used.add(module)
    assert used == set(checks.__all__) - {"plumbing", "integrity"}


def test_topic_modules_never_import_the_checks():
    for path in COURSE_UTILS.rglob("*.py"):
        if PACKAGE in path.parents:
            continue
        for module, name in imports(path):
            assert "checks" not in module.split(".") and name != "checks", f"{path.name} imports {module} {name}"


def test_no_module_imports_another_modules_private_name():
    for path in COURSE_UTILS.rglob("*.py"):
        private = [(module, name) for module, name in imports(path)
                   if name and name.startswith("_") and (module.startswith(".") or module.startswith("course_utils"))]
        assert not private, f"{path.relative_to(COURSE_UTILS)} imports {private}"


def test_no_module_uses_another_modules_private_name():
    """Nor reads one as an attribute: ``lesson._BestEpoch`` from another module of the package."""
    for path in COURSE_UTILS.rglob("*.py"):
        tree = ast.parse(path.read_text())
        modules = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                   and (node.level or (node.module or "").startswith("course_utils")) for alias in node.names
                   if (COURSE_UTILS / f"{alias.name}.py").is_file() or (COURSE_UTILS / alias.name).is_dir()}
        used = [f"{node.value.id}.{node.attr}" for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name) and node.value.id in modules
                and node.attr.startswith("_") and not node.attr.startswith("__")]
        assert not used, f"{path.relative_to(COURSE_UTILS)} uses {used}"


@pytest.mark.parametrize("lesson, name", [("lesson02", "check_contrastive_loss"), ("lesson03", "check_triplet_loss"),
                                          ("lesson04", "check_circle_loss")])
def test_a_loss_check_rejects_a_stub_and_a_non_tensor(lesson, name):
    check = getattr(getattr(checks, lesson), name)

    def stub(embeddings, labels, **kwargs):
        raise NotImplementedError()

    with pytest.raises(AssertionError, match="not implemented"):
        check(stub)
    with pytest.raises(AssertionError, match="scalar tensor"):
        check(lambda e, l, **kw: 0.5)


def reference_callers():
    """``(check, an answer that calls the reference, words of the refusal)`` for each exercise whose reference the
    student package holds under a callable name, or whose PML class it re-implements."""
    from pytorch_metric_learning import losses, miners

    from course_utils import ann, joint, sampling
    from course_utils.sampling import class_balanced_batches as alias  # an alias is refused too

    return [
        (checks.lesson06.check_balanced_batches, lambda labels, m, b, n, t, seed=0: alias(labels, m, b, n, t, seed),
         "sampling.class_balanced_batches"),
        (checks.lesson06.check_balanced_batches, sampling.class_balanced_batches, "sampling.class_balanced_batches"),
        (checks.lesson09.check_recall_at_k, lambda found, exact: ann.recall_at_k(found, exact), "ann.recall_at_k"),
        (checks.lesson05.check_ms_mine, lambda e, l, epsilon=0.1: miners.MultiSimilarityMiner(epsilon=epsilon)(e, l),
         "PML's MultiSimilarityMiner.mine"),
        (checks.lesson02.check_contrastive_loss, lambda e, l, **kw: losses.ContrastiveLoss(**kw)(e, l),
         "PML's ContrastiveLoss.compute_loss"),
        (checks.lesson07.check_joint_step, joint.joint_step, "joint.joint_step"),
    ]


@pytest.mark.parametrize("index", range(6))
def test_an_answer_that_calls_the_reference_is_refused_and_the_reference_restored(index):
    import torch
    from pytorch_metric_learning import losses, miners

    from course_utils import ann, sampling

    check, answer, words = reference_callers()[index]
    with pytest.raises(AssertionError, match=f"calls .*{words}.*does not accept it"):
        check(answer)
    labels = torch.arange(12) % 3
    assert sampling.class_balanced_batches(labels, 2, 4, 2, 0.5, seed=1).shape == (2, 4)
    assert ann.recall_at_k(torch.tensor([[1, 2]]).numpy(), torch.tensor([[1, 3]]).numpy()) == 0.5
    assert "compute_loss" not in vars(losses.ContrastiveLoss)
    assert len(miners.MultiSimilarityMiner()(torch.randn(8, 4), labels[:8])) == 4
