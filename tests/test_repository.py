"""What a public course repository carries besides the course: licences, citation, changelog, the GitHub workflow
and a README that guides rather than records (its measurements live on the course website's generated pages)."""
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORKFLOW = REPO / ".github" / "workflows" / "course.yml"
README = (REPO / "README.md").read_text(encoding="utf-8")


def schema_check(schema: str, path: Path) -> subprocess.CompletedProcess:
    """check-jsonschema with one of its bundled schemas (offline)."""
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)],
                          capture_output=True, text=True)


def readme_commands() -> list:
    """The README's two set-up commands, from the bash block that has them."""
    block = next(b for b in re.findall(r"```bash\n(.*?)```", README, re.S) if "course.py test" in b)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def test_the_readme_names_two_commands():
    assert readme_commands() == ["python3 course.py test", "python3 course.py run"]


def test_the_workflow_is_valid_and_runs_the_readme_commands():
    done = schema_check("vendor.github-workflows", WORKFLOW)
    assert done.returncode == 0, done.stdout + done.stderr
    text = WORKFLOW.read_text()
    runs = re.findall(r"^\s*run: (.+)$", text, re.M)
    assert runs == readme_commands()
    assert "actions/deploy-pages" in text and "path: build/site" in text and "schedule:" in text


def test_a_broken_workflow_is_caught(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("runs-on:", "runs_on:", 1))
    assert schema_check("vendor.github-workflows", broken).returncode != 0


def test_ci_runs_the_readme_commands_in_order():
    lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert [line for line in lines if line.startswith("python3 course.py")] == readme_commands()


def test_citation_is_valid_and_agrees_with_pyproject():
    done = schema_check("vendor.citation-file-format", REPO / "CITATION.cff")
    assert done.returncode == 0, done.stdout + done.stderr
    cff, pyproject = (REPO / "CITATION.cff").read_text(), (REPO / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1)
    assert f'version: "{version}"' in cff
    licence = re.search(r'^license = "([^"]+)"', pyproject, re.M).group(1)
    assert set(licence.split(" AND ")) == set(re.findall(r"^  - (MIT|CC-BY-4\.0)$", cff, re.M)) == {"MIT", "CC-BY-4.0"}


def test_licences_for_code_and_text():
    pyproject = (REPO / "pyproject.toml").read_text()
    files = re.search(r"^license-files = \[(.*)\]", pyproject, re.M).group(1)
    assert files.replace('"', "").split(", ") == ["LICENSE", "LICENSE-TEXT.md"]
    assert "MIT License" in (REPO / "LICENSE").read_text()
    assert "Creative Commons Attribution 4.0 International Public License" in (REPO / "LICENSE-TEXT.md").read_text()


def test_the_changelog_keeps_the_history():
    text = (REPO / "CHANGELOG.md").read_text()
    assert len(re.findall(r"^## ", text, re.M)) >= 3


def test_the_readme_guides_and_quotes_no_measurement():
    """Under 200 lines; no retrieval number, ratio or claim list (the website's pages hold those); of times, only
    the two set-up commands' measured times; links to the generated pages."""
    assert len(README.splitlines()) < 200
    assert not re.findall(r"\b0\.\d{2,}\b", README), "a metric value belongs on the results page"
    assert not re.findall(r"\d+(\.\d+)?\s?[x×]\b", README), "a speed-up belongs on the benchmark page"
    times = re.findall(r"\b\d+ min(?: \d+ s)?\b", README)
    assert len(times) == 2, times
    for page in ("results", "times", "claims", "benchmark"):
        assert f"{page}.html" in README
    assert "revision" not in README.lower()
