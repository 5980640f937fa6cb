"""Lesson 10's claims under a condition (random weights): checked when it holds, printed as not checked otherwise."""
import pytest
import torch

from course_utils import claims, session
from course_utils.own_images import claims as own_claims


@pytest.fixture
def full_mode(monkeypatch):
    claims.reset()
    monkeypatch.setenv(claims.STRICT_ENV, "1")
    yield session.Config(seed=0, device=torch.device("cpu"), quick=False)
    claims.reset()


def test_a_claim_whose_condition_holds_is_checked(full_mode):
    own_claims.claim(full_mode, True, "holds with random weights", only_when=True)
    with pytest.raises(AssertionError, match="misses with random weights"):
        own_claims.claim(full_mode, False, "misses with random weights", only_when=True)
    assert [r.held for r in claims.log()] == [True, False]


def test_a_claim_whose_condition_fails_is_not_checked(full_mode, capsys):
    own_claims.claim(full_mode, False, "about random weights", only_when=False)
    assert "(measured with random weights; not checked on this run) about random weights" in capsys.readouterr().out
    assert [(r.text, r.held) for r in claims.log()] == [("about random weights", None)]  # tallied as not checked
