import subprocess
import sys

import pytest
import torch

from course_utils import session, setup


@pytest.mark.parametrize("environ, expected", [
    ({}, False), ({"CI": "true"}, True), ({"COURSE_QUICK": "1"}, True),
    ({"COURSE_QUICK": "0", "CI": "true"}, False), ({"COURSE_QUICK": "yes"}, True)])
def test_quick_mode(environ, expected):
    assert session.quick_mode(environ) is expected


def test_quick_mode_rejects_nonsense():
    with pytest.raises(ValueError, match="COURSE_QUICK"):
        session.quick_mode({"COURSE_QUICK": "maybe"})


def test_setup_seeds_and_reports(capsys, monkeypatch):
    monkeypatch.setenv("COURSE_QUICK", "1")
    config = setup(3)
    first = torch.rand(3)
    assert "seed=3" in capsys.readouterr().out
    assert config == session.Config(seed=3, device=session.pick_device(), quick=True)
    setup(3, verbose=False)
    assert torch.equal(first, torch.rand(3))


def test_import_has_no_side_effects():
    code = ("import torch, random; s = torch.random.get_rng_state(); r = random.getstate();"
            "import course_utils, course_utils.data, course_utils.models, course_utils.training,"
            " course_utils.evaluation, course_utils.plotting, course_utils.checks, course_utils.results;"
            "[getattr(course_utils.checks, name) for name in course_utils.checks.__all__];"
            "assert torch.equal(s, torch.random.get_rng_state()) and r == random.getstate()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""
