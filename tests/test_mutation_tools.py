"""The generated project's mutation tools, on mutant records written by hand."""

import json
import subprocess

import pytest

KILLED, SURVIVED, TIMEOUT = 1, 0, 36  # mutmut's exit codes of a mutant's tests


@pytest.fixture
def mutants(tmp_path):
    """1,000 untested mutants of two files, as `mutmut run` records them before testing."""
    names = {
        "views.py": [f"pkg.views.x_item__mutmut_{number}" for number in range(1, 401)],
        "settings.py": [f"pkg.settings.x_load__mutmut_{number}" for number in range(1, 601)],
    }
    folder = tmp_path / "mutants" / "src" / "pkg"
    folder.mkdir(parents=True)

    def record(verdicts: dict[str, int | None]) -> None:
        for file, file_names in names.items():
            exit_codes = {name: verdicts.get(name) for name in file_names}
            (folder / f"{file}.meta").write_text(json.dumps({"exit_code_by_key": exit_codes}))

    record({})
    return record


def sample_tool(baked, tmp_path, *arguments: str) -> subprocess.CompletedProcess:
    project = baked("all-defaults")
    tool = project.path / "tools" / "mutation" / "sample.py"
    command = [project.python, tool, *arguments]
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)


def picked(baked, tmp_path, *arguments: str) -> list[str]:
    result = sample_tool(baked, tmp_path, "pick", *arguments)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_the_sample_is_random_and_the_same_again_for_the_same_seed(baked, tmp_path, mutants):
    sample = picked(baked, tmp_path, "--size", "100")
    assert len(set(sample)) == 100
    assert {name.split(".")[1] for name in sample} == {"views", "settings"}
    assert picked(baked, tmp_path, "--size", "100") == sample
    assert picked(baked, tmp_path, "--size", "100", "--seed", "2") != sample


def test_the_score_counts_the_sample_alone_with_its_95_percent_interval(baked, tmp_path, mutants):
    sample = picked(baked, tmp_path, "--size", "100")
    untested = sample_tool(baked, tmp_path, "score", "--size", "100")
    assert untested.returncode == 1
    assert "100 of the 100 sampled mutants are not tested yet" in untested.stdout

    survivors, timeouts = sample[:5], sample[5:8]
    verdicts = {name: KILLED for name in sample}
    verdicts |= {name: SURVIVED for name in survivors} | {name: TIMEOUT for name in timeouts}
    mutants(verdicts)  # the mutants outside the sample stay untested
    result = sample_tool(baked, tmp_path, "score", "--size", "100")
    assert result.returncode == 0, result.stderr
    # Wilson's interval of 95 of 100, as published tables give it: 0.888 to 0.978.
    assert "95 killed, 95.0 % (95 % interval 88.8 to 97.8 %)" in result.stdout
    listed = [line.split()[-1] for line in result.stdout.splitlines() if line.startswith("  ")]
    assert listed == sorted(survivors)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [(["pick", "--size", "1001"], "src/ has only 1000 mutants"),
     (["score", "--size", "1001"], "src/ has only 1000 mutants")],
)  # fmt: skip
def test_a_sample_larger_than_the_mutants_is_refused(baked, tmp_path, mutants, arguments, message):
    result = sample_tool(baked, tmp_path, *arguments)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_without_mutants_it_says_to_run_mutmut_first(baked, tmp_path):
    result = sample_tool(baked, tmp_path, "pick")
    assert result.returncode != 0
    assert "no mutants: run mutmut first" in result.stderr
    assert "Traceback" not in result.stderr
