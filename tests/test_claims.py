"""Claims: checked in full mode only, fatal only in strict runs, reported at the lesson's end, with evidence."""
import json

import pytest
import torch

from course_utils import claims, lesson
from course_utils.session import Config

QUICK, FULL = Config(seed=0, device=torch.device("cpu"), quick=True), Config(0, torch.device("cpu"), False)
TABLE = {"a": {"unseen": {"map_r": 0.45, "map_r_std": 0.01}}, "b": {"unseen": {"map_r": 0.40, "map_r_std": 0.03}}}


@pytest.fixture(autouse=True)
def fresh_log(monkeypatch):
    monkeypatch.delenv(claims.STRICT_ENV, raising=False)
    claims.reset()
    yield
    claims.reset()


def test_quick_mode_checks_nothing(capsys):
    lesson.claim(QUICK, False, "x beats y")
    assert "(quick mode: not checked) x beats y" in capsys.readouterr().out
    assert claims.log()[0].held is None


def test_a_claim_that_holds_prints_a_tick(capsys):
    lesson.claim(FULL, True, "x beats y")
    assert "✓ x beats y" in capsys.readouterr().out


def test_strict_runs_stop_at_a_missed_claim_with_what_was_compared(monkeypatch):
    monkeypatch.setenv(claims.STRICT_ENV, "1")
    with pytest.raises(AssertionError, match=r"(?s)x beats y.*a − b, unseen map_r: \+0\.050 \(margin 0\.040\)"):
        lesson.claim(FULL, claims.ties(TABLE, "a", "b", "unseen"), "x beats y")


def test_a_student_run_warns_and_goes_on(capsys):
    lesson.claim(FULL, claims.ties(TABLE, "a", "b", "unseen"), "a ties b")
    err = capsys.readouterr().err
    assert "NOT CONFIRMED ON THIS MACHINE" in err and "a ties b" in err
    assert "+0.050 (margin 0.040)" in err and "goes on" in err
    lesson.claim(FULL, True, "a is a method")
    missed = lesson.claims_report(FULL)
    assert [r.text for r in missed] == ["a ties b"]
    out = capsys.readouterr().out
    assert "1 of 2 checked claims held" in out and "not confirmed: a ties b" in out


@pytest.mark.parametrize("value, strict", [("1", True), ("true", True), ("0", False), ("", False)])
def test_strict_is_read_from_the_environment(value, strict):
    assert claims.strict({claims.STRICT_ENV: value}) is strict


def test_evidence_belongs_to_the_next_claim_only(capsys):
    assert claims.wins(0.50, 0.40) and claims.ties(0.41, 0.40)
    lesson.claim(FULL, True, "first")
    lesson.claim(FULL, False, "second")
    assert claims.log()[0].evidence == ["0.500 − 0.400 = +0.100 (margin 0.030)",
                                        "0.410 − 0.400 = +0.010 (margin 0.030)"]
    assert claims.log()[1].evidence == []
    assert "0.500" not in capsys.readouterr().err


def test_device_timing_claims_are_checked_only_on_their_device(capsys):
    gpu = Config(0, torch.device("cuda"), False)
    lesson.claim(gpu, False, "HNSW is faster than exact search", only_on="cpu")
    assert "measured on cpu only; this is cuda: not checked" in capsys.readouterr().out
    lesson.claim(FULL, True, "HNSW is faster than exact search", only_on="cpu")
    assert "✓" in capsys.readouterr().out


def test_wins_and_ties_follow_the_margin():
    assert claims.threshold(TABLE, "a", "b", "unseen") == pytest.approx(0.04)
    assert claims.wins(TABLE, "a", "b", "unseen") and not claims.ties(TABLE, "a", "b", "unseen")
    close = {**TABLE, "a": {"unseen": {"map_r": 0.43, "map_r_std": 0.01}}}
    assert claims.ties(close, "a", "b", "unseen") and not claims.wins(close, "b", "a", "unseen")


def test_report_when_nothing_was_checked(capsys):
    lesson.claim(QUICK, True, "x")
    assert lesson.claims_report(QUICK) == []
    assert "quick mode checks none" in capsys.readouterr().out


def test_a_lesson_whose_claim_misses_finishes_with_a_warning_outside_strict_runs(monkeypatch):
    """Lesson 00 in a full-mode kernel that is not strict (a student's), its claim forced false: every cell runs,
    the claim's cell warns, and the tally at the end lists it."""
    import nbformat
    from nbclient import NotebookClient

    from course_utils.paths import notebooks_dir

    path = notebooks_dir() / "00_course_setup.ipynb"
    nb = nbformat.read(path, as_version=4)
    [cell] = [c for c in nb.cells if c.cell_type == "code" and "lesson.claim(" in c.source]
    cell.source = cell.source.replace("lesson.claim(config, bool((counts == counts[0]).all())",
                                      "lesson.claim(config, claims.ties(0.50, 0.40)")
    assert "claims.ties(0.50, 0.40)" in cell.source
    monkeypatch.setenv("COURSE_QUICK", "0")
    monkeypatch.delenv(claims.STRICT_ENV, raising=False)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    warning = "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stderr")
    assert "NOT CONFIRMED ON THIS MACHINE" in warning and "0.500 − 0.400 = +0.100 (margin 0.030)" in warning
    [tally] = [c for c in nb.cells if c.cell_type == "code" and "claims_report" in c.source]
    report = "".join(o.get("text", "") for o in tally.outputs)
    assert "0 of 1 checked claims held" in report and "not confirmed: every class has the same number" in report


def test_wins_and_ties_on_numbers_use_the_noise_or_a_given_threshold():
    assert claims.wins(0.50, 0.40) and not claims.wins(0.42, 0.40) and not claims.wins(0.40, 0.50)
    assert claims.ties(0.42, 0.40) and not claims.ties(0.5, 0.4)
    assert not claims.wins(0.50, 0.40, 0.2) and claims.ties(0.50, 0.40, 0.2)


def test_wins_and_ties_on_a_table_use_the_larger_of_noise_and_seed_spread():
    table = {"a": {"s": {"map_r": 0.48, "map_r_std": 0.04}}, "b": {"s": {"map_r": 0.42, "map_r_std": 0.03}},
             "c": {"s": {"map_r": 0.40}}}
    assert not claims.wins(table, "a", "b", "s") and claims.ties(table, "a", "b", "s")  # 0.06 < 0.04 + 0.03
    assert claims.threshold(table, "a", "b", "s") == pytest.approx(0.07)
    assert claims.wins(table, "a", "c", "s") and not claims.wins(table, "c", "a", "s")
    assert claims.threshold(table, "b", "c", "s") == claims.NOISE and claims.ties(table, "b", "c", "s")
    table["c"]["s"]["p1"], table["b"]["s"]["p1"] = 0.9, 0.5
    assert claims.wins(table, "c", "b", "s", "p1")  # another metric


def test_every_claim_met_goes_to_the_runners_file(tmp_path, monkeypatch):
    """``COURSE_CLAIMS`` names a file (the course runner's, for the website's page of claims): each claim met, as
    a JSON line with whether it held; a conditional claim whose condition fails is logged as not checked."""
    from course_utils.own_images.claims import claim

    path = tmp_path / "claims.jsonl"
    monkeypatch.setenv(claims.LOG_ENV, str(path))
    lesson.claim(FULL, True, "x beats y")
    lesson.claim(QUICK, True, "z ties w")
    claim(FULL, False, "random weights collapse", only_when=False)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == [{"text": "x beats y", "held": True}, {"text": "z ties w", "held": None},
                    {"text": "random weights collapse", "held": None}]
    assert [r.held for r in claims.log()] == [True, None, None]
