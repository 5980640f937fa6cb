from course_utils import results


def test_record_merges_lessons(tmp_path):
    path = tmp_path / "build" / "results.json"
    results.record("01", {"p1": 0.123456}, path)
    results.record("01", {"wall_time_s": 3}, path)
    results.record("02", {"p1": 0.5}, path)
    assert results.load(path) == {"01": {"p1": 0.1235, "wall_time_s": 3.0}, "02": {"p1": 0.5}}
    table = results.format_table(results.load(path))
    assert table.splitlines()[0].split() == ["lesson", "metric", "value"]
    assert "0.1235" in table


def test_record_without_a_path_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(results.RESULTS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert results.record("01", {"p1": 1}) == {"p1": 1.0}
    assert list(tmp_path.iterdir()) == []


def test_record_flattens_a_table(tmp_path):
    table = {"raw pixels": {"seen": {"p1": 0.5, "map_r": 0.25}, "unseen": {"p1": 1}}}
    assert results.record("02", table, tmp_path / "r.json") == {
        "raw pixels seen p1": 0.5, "raw pixels seen map_r": 0.25, "raw pixels unseen p1": 1.0}


def record_many(lesson, path):
    for i in range(30):
        results.record(lesson, {f"m{i}": i}, path)


def test_record_from_lessons_running_at_once_loses_nothing(tmp_path):
    """``run_course --jobs``: several kernels merge into one results file; each merge holds the lock."""
    from concurrent.futures import ProcessPoolExecutor

    path = tmp_path / "results.json"
    lessons = [f"0{i}" for i in range(4)]
    with ProcessPoolExecutor(4) as pool:
        list(pool.map(record_many, lessons, [path] * 4))
    assert results.load(path) == {lesson: {f"m{i}": float(i) for i in range(30)} for lesson in lessons}


def test_a_record_shows_as_one_line(tmp_path):
    shown = results.record("02", {"a": {"seen": {"p1": 0.5, "map_r": 0.25}}}, tmp_path / "r.json")
    assert shown == {"a seen p1": 0.5, "a seen map_r": 0.25}
    assert repr(shown) == str(shown) == f"Recorded 2 numbers of 02 in {tmp_path / 'r.json'}"
    from IPython.lib.pretty import pretty
    assert pretty(shown) == repr(shown)


def test_markdown_table_pairs_each_mean_with_its_spread():
    everything = {"02": {"contrastive seen p1": 0.88, "contrastive seen p1_std": 0.005, "contrastive seen map_r": 0.68,
                         "contrastive unseen p1": 0.91, "contrastive unseen map_r": 0.39,
                         "raw pixels unseen map_r": 0.46,
                         "wall_time_s": 12.0, "ddp loss_ratio": 2.0},
                  "09": {"wall_time_s": 3.0}}
    lines = results.markdown_table(everything).splitlines()
    assert lines[0] == "| lesson | embedding | seen P@1 | seen MAP@R | unseen P@1 | unseen MAP@R |"
    assert lines[2:] == ["| 02 | contrastive | 0.880 ± 0.005 | 0.680 | 0.910 | 0.390 |",
                         "| 02 | raw pixels | – | – | – | 0.460 |"]
    assert results.markdown_table(everything, ["09"]).count("\n") == 1  # header and rule only
