"""`cd4ml-nb test`: notebook regression tests within a tolerance, across seeds, against baselines
(real git repositories, real kernels, real SQLite MLflow stores, nbval run for real)."""
from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest

from cd4ml_nb import checks
from cd4ml_nb.cli import main
from cd4ml_nb.exceptions import ConfigError
from cd4ml_nb.project import Project

from nbfactory import commit_all, git, init_repo, write_ipynb

PYPROJECT = '[tool.cd4ml_nb]\nhtml = false\nci_notebooks = ["nb.ipynb"]\n'


def script(*cells: str, parameters: str | None = None) -> str:
    """A percent script; a cell starting with ``#regression`` is tagged ``regression``."""
    parts = [f'# %% tags=["parameters"]\n{parameters.strip()}\n'] if parameters else []
    for cell in cells:
        if cell.startswith("#regression\n"):
            parts.append('# %% tags=["regression"]\n' + cell.split("\n", 1)[1].strip() + "\n")
        else:
            parts.append("# %%\n" + cell.strip() + "\n")
    return "\n".join(parts)


def client(repo: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{repo / '.cd4ml' / 'mlflow.db'}")


def runs(repo: Path, experiment: str):
    c = client(repo)
    exp = c.get_experiment_by_name(experiment)
    return [] if exp is None else c.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    repo = init_repo(tmp_path / "proj", branch="master")
    (repo / "pyproject.toml").write_text(PYPROJECT)
    monkeypatch.chdir(repo)
    return repo


# --- the comparison itself (no kernel) --------------------------------------------------------


def test_tolerance_numbers_and_text_normalisation():
    tol = checks.Tolerance(rtol=1e-5, atol=1e-8)
    assert tol.holds(0.438716460924, 0.438716461287)  # the 9th digit
    assert not tol.holds(0.8, 0.84)  # 5 %
    assert tol.holds(math.nan, math.nan) and not tol.holds(math.nan, 1.0) and not tol.holds(math.inf, -math.inf)
    assert not tol.holds(1.0, 1.2) and tol.holds(1.0, 1.2, spread=0.25)

    masked = checks.normalise("<Model at 0x7f3a2b1c> run 0a1b2c3d4e5f60718293a4b5c6d7e8f9 at "
                                  "2024-05-01 12:30:01.123 in /tmp/pytest-7/proj/out.csv, 1.5 s")
    assert masked == "<Model at <address>> run <id> at <timestamp> in <path>, 1.5 s"
    template, numbers = checks.split_numbers("loss=0.25   epochs 3, lr 1e-3 on float64, nan; -2.5.")
    assert template == "loss=# epochs #, lr # on float64, #; #." and numbers[:3] == [0.25, 3.0, 1e-3]
    assert math.isnan(numbers[3]) and numbers[4] == -2.5

    html = ('<div><style scoped>.x {color: red}</style><table><tr><th>loss</th></tr>'
            '<tr><td>0.123456789</td></tr></table></div>')
    cell = {"outputs": [
        {"output_type": "stream", "name": "stdout", "text": "epoch 1 "},
        {"output_type": "stream", "name": "stderr", "text": "DeprecationWarning: whatever\n"},
        {"output_type": "stream", "name": "stdout", "text": ["loss ", "0.5\n"]},
        {"output_type": "execute_result", "data": {"text/plain": "   loss\n0  0.12", "text/html": html}},
        {"output_type": "display_data", "data": {"application/json": {"b": 2.5, "a": 1}, "text/plain": "{...}"}},
        {"output_type": "display_data", "data": {"image/png": "iVBOR..."}},
    ]}
    assert checks.output_texts(cell) == ["epoch 1 loss 0.5\n", "   loss\n0  0.12", '{"a": 1, "b": 2.5}']
    assert "0.123456789" in checks.html_text(html) and "color" not in checks.html_text(html)


def test_cells_compare_numbers_within_tolerance_and_the_rest_as_text():
    tol = checks.Tolerance(1e-5, 1e-8)
    base = checks.CellOutputs(4, ("loss 0.4387164609242033 after 3 epochs\n   a    b\n0  1.0  2.0",))
    wider = checks.CellOutputs(4, ("loss 0.43871646105 after 3 epochs\n     a      b\n0  1.0  2.0",))
    (ok,) = checks.compare_cell("nb.ipynb", base, wider, tol)
    assert ok.passed and ok.item == "cell 4" and 0 < ok.delta < 1e-9
    worse = checks.CellOutputs(4, ("loss 0.46 after 3 epochs\n   a    b\n0  1.0  2.0",))
    (bad,) = checks.compare_cell("nb.ipynb", base, worse, tol)
    assert not bad.passed and bad.item == "cell 4 number 0" and bad.baseline == 0.4387164609242033
    words = checks.CellOutputs(4, ("loss 0.4387164609242033 after 3 epochs\n   a    c\n0  1.0  2.0",))
    (text,) = checks.compare_cell("nb.ipynb", base, words, tol)
    assert not text.passed and text.item == "cell 4 text" and (text.baseline, text.now) == ("a b", "a c")
    (count,) = checks.compare_cell("nb.ipynb", base, checks.CellOutputs(4, ()), tol)
    assert not count.passed and (count.baseline, count.now) == (1, 0)


def test_seed_means_are_compared_within_the_baselines_spread():
    tol = checks.Tolerance(1e-5, 1e-8)
    base = checks.aggregate([{"acc": 0.9}, {"acc": 1.0}, {"acc": 1.1}])["acc"]
    assert base.mean == pytest.approx(1.0) and base.spread == pytest.approx(0.1)
    held = checks.MetricValues((1.1, 0.9, 1.0))
    assert checks.compare_metric("nb", "acc", base, held, tol).passed
    shifted = checks.MetricValues((1.15, 1.2, 1.25))
    check = checks.compare_metric("nb", "acc", base, shifted, tol)
    assert not check.passed and check.item == "acc (mean of 3 vs 3)" and check.delta == pytest.approx(0.2)


def test_per_metric_tolerances_from_pyproject(tmp_path):
    root = tmp_path / "p"
    root.mkdir()
    (root / "pyproject.toml").write_text("[tool.cd4ml_nb]\ntest_rtol = 0.001\n"
                                         "test_tolerances = { loss = { rtol = 0.1 }, acc = { atol = 0.5 } }\n")
    of = checks.tolerances(Project.discover(root))
    assert of("loss") == checks.Tolerance(0.1, 1e-8) and of("acc") == checks.Tolerance(0.001, 0.5)
    assert of(None) == checks.Tolerance(0.001, 1e-8) == of("other")
    assert checks.tolerances(Project.discover(root), rtol=0.2)("loss") == checks.Tolerance(0.2, 1e-8)
    (root / "pyproject.toml").write_text("[tool.cd4ml_nb]\ntest_tolerances = { loss = { rel = 0.1 } }\n")
    with pytest.raises(ConfigError, match=r"pyproject.toml: \[tool.cd4ml_nb\] test_tolerances: loss"):
        checks.tolerances(Project.discover(root))


# --- cd4ml-nb test with real kernels ----------------------------------------------------------

LOSS = script(
    "import mlflow\nscale = 1.0\nloss = 0.8 * scale\nmlflow.log_metric('loss', loss)",
    "#regression\nprint(f'loss {loss:.6f} after 3 epochs')",
    parameters="lr: float = 0.1",
)


def test_missing_baseline_is_exit_2_with_what_to_run(project, capsys):
    write_ipynb(project / "nb.ipynb", LOSS)
    commit_all(project)
    assert main(["test", "nb.ipynb"]) == 2
    out = capsys.readouterr().out
    assert "nb.ipynb: CANNOT EVALUATE (not run)" in out
    assert ("no committed file .cd4ml-baselines/nb.json and no FINISHED run of nb.ipynb on the base branch "
            "'master'") in out
    assert "record one with `cd4ml-nb test nb.ipynb --update`" in out
    assert main(["test", "nb.ipynb", "--baseline", "no-such-branch"]) == 2
    assert "no FINISHED run of nb.ipynb on branch 'no-such-branch'" in capsys.readouterr().out
    assert main(["test", "nb.ipynb", "--seeds", "3", "--json"]) == 2
    (data,) = json.loads(capsys.readouterr().out)["notebooks"]
    assert data["status"] == "cannot-evaluate" and "has no parameter 'seed'" in data["problems"][0]
    (project / ".cd4ml-baselines").mkdir()
    (project / ".cd4ml-baselines" / "nb.json").write_text('{"format": 1, "metrics": ')
    assert main(["test", "nb.ipynb"]) == 2
    assert ".cd4ml-baselines/nb.json: unreadable baseline file" in capsys.readouterr().out
    assert main(["test", "missing.ipynb"]) == 2
    assert "missing.ipynb: no such file" in capsys.readouterr().out
    assert main(["test", "nb.ipynb", "--seeds", "0"]) == 2
    assert main(["test", "nb.ipynb", "--update", "--baseline", "master"]) == 2
    err = capsys.readouterr().err
    assert "--seeds 0: give at least 1" in err and "--baseline 'master' must be a folder" in err
    assert runs(project, "master") == []  # nothing ran


@pytest.mark.slow
def test_a_code_change_shifting_a_metric_by_5_percent_fails_with_the_table(project, capsys):
    write_ipynb(project / "nb.ipynb", LOSS)
    commit_all(project)
    assert main(["test", "nb.ipynb", "--update", "-q", "-p", "lr", "0.2"]) == 0
    baseline = json.loads((project / ".cd4ml-baselines" / "nb.json").read_text())
    assert baseline["notebook"] == "nb.ipynb" and baseline["parameters"] == {"lr": 0.2}
    assert baseline["metrics"]["loss"]["values"] == [0.8]
    assert baseline["cells"] == [{"index": 2, "outputs": ["loss 0.800000 after 3 epochs\n"]}]
    commit_all(project, "baseline")
    git(project, "checkout", "-q", "-b", "feature")
    nb = project / "nb.ipynb"
    nb.write_text(nb.read_text().replace("scale = 1.0", "scale = 1.05"))
    commit_all(project, "5 % worse")
    capsys.readouterr()

    assert main(["test", "nb.ipynb", "-q"]) == 1
    out = capsys.readouterr().out
    assert "nb.ipynb: REGRESSION (1 run(s)" in out and "against file .cd4ml-baselines/nb.json" in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("result"))
    assert lines[header].split() == ["result", "notebook", "metric", "or", "cell", "baseline", "now", "delta",
                                     "tolerance"]
    assert lines[header + 2].split()[:6] == ["FAIL", "nb.ipynb", "loss", "0.8", "0.84", "+0.04"]
    assert lines[header + 3].split()[:7] == ["FAIL", "nb.ipynb", "cell", "2", "number", "0", "0.8"]
    assert "±8.01e-06 (rtol 1e-05, atol 1e-08)" in lines[header + 2]
    assert "record a new baseline: `cd4ml-nb test nb.ipynb --update`" in out
    (test_run,) = runs(project, "feature")
    assert test_run.info.status == "FINISHED" and test_run.data.params == {"lr": "0.2"}  # the baseline's
    assert test_run.data.tags["cd4ml.test"] == "true" and test_run.data.tags["cd4ml.test.result"] == "regression"

    assert main(["ci"]) == 5  # the smoke run is the regression test against the committed baseline
    out = capsys.readouterr().out
    assert "== ci: regression test (committed baselines) ==" in out and "ci FAILED at the regression test" in out
    assert "== ci: nbval ==" not in out

    git(project, "rm", "-q", ".cd4ml-baselines/nb.json")
    commit_all(project, "no baseline file: the base branch's latest run is the baseline")
    assert main(["test", "nb.ipynb", "-q", "--json"]) == 1
    (data,) = json.loads(capsys.readouterr().out)["notebooks"]
    assert data["baseline"]["source"]["description"].startswith("latest FINISHED run on 'master'")
    assert {c["item"]: (c["baseline"], c["passed"]) for c in data["checks"]} == {
        "loss": (0.8, False), "cell 2 number 0": (0.8, False)}  # cells from the base run's executed notebook


NOISY = script(
    "import json\nimport numpy as np\nweights = np.array(json.load(open('weights.json')))",
    "rng = np.random.default_rng(seed)\nx = rng.normal(size=len(weights))\nloss = float(np.mean((x * weights) ** 2))",
    "#regression\nprint(f'loss={loss!r}')\n{'loss': loss, 'n': len(weights)}",
    parameters="seed: int = 7",
)


def _with_outputs(source: Path, executed: Path) -> None:
    """Give the notebook the outputs of its executed copy (as when it is saved after a run)."""
    nb, ran = json.loads(source.read_text()), json.loads(executed.read_text())
    cells = [c for c in ran["cells"] if "cd4ml-injected" not in c["metadata"].get("tags", [])]
    for mine, theirs in zip(nb["cells"], cells, strict=True):
        if mine["cell_type"] == "code":
            mine["outputs"], mine["execution_count"] = theirs["outputs"], theirs["execution_count"]
    source.write_text(json.dumps(nb, indent=1))


@pytest.mark.slow
def test_ninth_digit_noise_passes_where_nbval_fails(project, capsys):
    rng = random.Random(3)
    weights = [rng.uniform(0.5, 2.0) for _ in range(50)]
    (project / "weights.json").write_text(json.dumps(weights))
    write_ipynb(project / "nb.ipynb", NOISY)
    commit_all(project)
    assert main(["test", "nb.ipynb", "--update", "-q"]) == 0
    (run,) = runs(project, "master")
    _with_outputs(project / "nb.ipynb", Path(run.data.tags["cd4ml.output_dir"]) / "nb.ipynb")
    commit_all(project, "baseline, and the notebook with its outputs")
    # the data is exported again with 9 significant digits: results move in the 9th digit
    (project / "weights.json").write_text(json.dumps([float(f"{w:.9g}") for w in weights]))
    capsys.readouterr()

    assert main(["test", "nb.ipynb", "-q", "--json"]) == 0
    (data,) = json.loads(capsys.readouterr().out)["notebooks"]
    (cell,) = data["checks"]
    assert data["status"] == "pass" and cell["item"] == "cell 3" and cell["now"] == "same text, numbers within"
    assert cell["passed"] and 0 < cell["delta"] < 1e-8  # the outputs did change, below the tolerance

    nbval = subprocess.run([sys.executable, "-m", "pytest", "--nbval", "nb.ipynb", "-p", "no:cacheprovider",
                            "-o", "addopts=", "-q"], cwd=project, capture_output=True, text=True, timeout=300)
    assert nbval.returncode == 1, nbval.stdout + nbval.stderr
    assert "1 failed" in nbval.stdout and "loss=" in nbval.stdout  # nbval compares the outputs as strings


SEEDED = script(
    "import mlflow\ndraws = [0.9, 1.0, 1.1]  # what each seed draws\naccuracy = draws[seed % 3]\n"
    "mlflow.log_metric('accuracy', accuracy)",
    parameters="seed: int = 42  # random seed",
)


@pytest.mark.slow
def test_seeds_compare_the_mean_within_the_baselines_spread(project, capsys):
    write_ipynb(project / "nb.ipynb", SEEDED)
    commit_all(project)
    assert main(["test", "nb.ipynb", "--seeds", "3", "--update", "-q"]) == 0
    baseline = json.loads((project / ".cd4ml-baselines" / "nb.json").read_text())
    assert baseline["seeds"] == {"parameter": "seed", "values": [42, 43, 44]}
    assert baseline["metrics"]["accuracy"]["values"] == [0.9, 1.0, 1.1] and baseline["parameters"] == {}
    commit_all(project, "baseline over 3 seeds")
    nb = project / "nb.ipynb"  # each seed now draws another value; the distribution is the same
    nb.write_text(nb.read_text().replace("draws = [0.9, 1.0, 1.1]", "draws = [1.1, 0.9, 1.0]"))
    capsys.readouterr()

    assert main(["test", "nb.ipynb", "--seeds", "3", "-q", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    (data,) = result["notebooks"]
    assert result["exit_code"] == 0 and data["status"] == "pass"
    assert data["metrics"]["accuracy"]["values"] == [1.1, 0.9, 1.0]  # every seed changed ...
    (check,) = data["checks"]
    assert check["item"] == "accuracy (mean of 3 vs 3)" and check["passed"]  # ... the mean held
    assert check["allowed"] == pytest.approx(0.1 + 1e-5 + 1e-8, rel=1e-3)  # the spread widens the tolerance
    test_runs = [r for r in runs(project, "master") if r.data.tags.get("cd4ml.test.update") != "true"]
    assert sorted(r.data.params["seed"] for r in test_runs) == ["42", "43", "44"]
    assert all(r.data.tags["cd4ml.test"] == "true" and r.data.tags["cd4ml.test.result"] == "pass" for r in test_runs)
