"""compare, gate, report, promote and ci with real runs on two branches of a real repository."""
from __future__ import annotations

import json
import os

import pytest

from cd4ml_nb.cli import main

from nbfactory import commit_all, git, init_repo, percent, write_ipynb

NOTEBOOK = percent(
    "import mlflow\nmlflow.log_metric('loss', loss)\nmlflow.log_metric('accuracy', 1 - loss / 10)",
    "if fail:\n    raise RuntimeError('asked to fail')",
    "if log_model:\n    from sklearn.dummy import DummyRegressor\n    import mlflow.sklearn\n"
    "    mlflow.sklearn.log_model(DummyRegressor().fit([[0.0]], [loss]), name='model',"
    " serialization_format='cloudpickle', pip_requirements=['scikit-learn'])",
    parameters="loss: float = 1.0  # the metric this run reports\nseed: int = 0\nfail: bool = False\n"
               "log_model: bool = False",
)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """master: loss 1.0 then 1.2; try-random-forest (notebook edited): loss 1.3 then 1.25 (with a model)."""
    old = os.getcwd()
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    repo = init_repo(tmp_path_factory.mktemp("assess") / "repo", branch="master")
    write_ipynb(repo / "model.ipynb", NOTEBOOK)
    os.chdir(repo)
    try:
        assert main(["pair", "model.ipynb"]) == 0
        commit_all(repo, "model notebook")
        for loss in ("1.0", "1.2"):
            assert main(["run", "model.ipynb", "-q", "--no-html", "-p", "loss", loss]) == 0
        git(repo, "checkout", "-q", "-b", "try-random-forest")
        py = repo / "model.py"
        py.write_text(py.read_text().replace("seed: int = 0", "seed: int = 0\nn_estimators: int = 100  # trees"))
        assert main(["sync", "model.py"]) == 0
        commit_all(repo, "random forest")
        assert main(["run", "model.ipynb", "-q", "--no-html", "-p", "loss", "1.3"]) == 0
        assert main(["run", "model.ipynb", "-q", "--no-html", "-p", "loss", "1.25", "-p", "log_model", "true"]) == 0
        yield repo
    finally:
        os.chdir(old)
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved



def latest_run(repo, branch="try-random-forest"):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{repo / '.cd4ml' / 'mlflow.db'}")
    exp = c.get_experiment_by_name(branch)
    return c, c.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])


def test_compare_shows_both_branches_with_deltas(here, capsys):
    assert main(["compare", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["branch"], data["base"]) == ("try-random-forest", "master")
    (nb,) = data["notebooks"]
    loss = next(d for d in nb["deltas"] if d["metric"] == "loss")
    assert loss["goal"] == "minimize" and (loss["base"], loss["branch"]) == (1.2, 1.25)
    assert loss["delta"] == pytest.approx(0.05) and loss["relative"] == pytest.approx(0.05 / 1.2)
    acc = next(d for d in nb["deltas"] if d["metric"] == "accuracy")
    assert acc["goal"] == "maximize"
    assert nb["best_base"]["metrics"]["loss"] == 1.0 and nb["best_branch"]["metrics"]["loss"] == 1.25
    assert nb["params_changed"]["loss"] == ["1.2", "1.25"]
    assert main(["compare"]) == 0
    out = capsys.readouterr().out
    assert "try-random-forest" in out and "+4.17%" in out


@pytest.mark.parametrize("argv, code", [
    (["--metric", "loss", "--goal", "minimize", "--max-regression", "0.1"], 0),
    (["--metric", "loss", "--goal", "minimize", "--max-regression", "2%"], 1),
    (["--metric", "loss", "--max-regression", "5%"], 0),
    (["--metric", "loss", "--goal", "minimize"], 1),
    (["--metric", "loss", "--goal", "maximize"], 0),  # higher is better: the branch improved
    (["--metric", "accuracy", "--goal", "maximize", "--max-regression", "0.001"], 1),
    (["--metric", "accuracy", "--max-regression", "0.01"], 0),
    (["--metric", "loss", "--max-regression", "0.1", "--min-runs", "2"], 1),  # means: 1.1 -> 1.275
    (["--metric", "loss", "--max-regression", "0.2", "--min-runs", "2"], 0),
    (["--metric", "loss", "--max-regression", "0.1", "--metric", "accuracy", "--max-regression", "0.001"], 1),
    (["--metric", "loss", "--runs", "best", "--max-regression", "0.3"], 0),  # best: 1.0 -> 1.25
    (["--metric", "loss", "--runs", "best", "--max-regression", "0.2"], 1),
])
def test_gate_exit_codes(here, capsys, argv, code):
    assert main(["gate", *argv]) == code, capsys.readouterr()


@pytest.mark.parametrize("argv, fragment", [
    (["--metric", "loss", "--base", "develop"], "base branch 'develop' has no FINISHED run of model.ipynb"),
    (["--metric", "nope"], "metric 'nope' was not logged"),
    (["--metric", "loss", "--min-runs", "3"], "--min-runs 3 needs 3 FINISHED runs"),
    (["--metric", "loss", "--against", "models:/absent@champion"], "no model version has alias"),
])
def test_gate_cannot_evaluate_is_exit_2(here, capsys, argv, fragment):
    assert main(["gate", *argv]) == 2
    assert fragment in capsys.readouterr().err


def test_report_markdown_and_html(here, capsys, tmp_path):
    assert main(["report", "--metric", "loss", "--max-regression", "0.1", "-o", str(tmp_path / "r.md")]) == 0
    text = (tmp_path / "r.md").read_text()
    assert "| loss | minimize | 1.2 | 1.25 | 0.05 | +4.17% | ✅ pass |" in text
    assert "+n_estimators: int = 100  # trees" in text and "model.py" in text
    assert '"cell_type"' not in text and "model.ipynb (inputs" not in text
    assert "| loss | 1.2 | 1.25 |" in text  # parameter diff
    assert main(["report", "--format", "html", "-o", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "<svg" in page and "n_estimators" in page and '"cell_type"' not in page


def test_promote_moves_the_alias_and_refuses_bad_runs(here, capsys):
    c, runs = latest_run(here)
    with_model, without_model = runs[0], runs[1]
    assert main(["promote", with_model.info.run_id, "--model", "demand"]) == 0
    version = c.get_model_version_by_alias("demand", "champion")
    assert version.run_id == with_model.info.run_id
    assert main(["gate", "--metric", "loss", "--against", "models:/demand@champion"]) == 0
    capsys.readouterr()
    assert main(["promote", without_model.info.run_id, "--model", "demand"]) == 2
    assert "logged no model" in capsys.readouterr().err
    assert main(["run", "model.ipynb", "-q", "--no-html", "-p", "fail", "true"]) == 1
    _, runs = latest_run(here)
    assert runs[0].info.status == "FAILED"
    assert main(["promote", runs[0].info.run_id, "--model", "demand"]) == 2
    assert "is FAILED, not FINISHED" in capsys.readouterr().err
    assert c.get_model_version_by_alias("demand", "champion").version == version.version
    assert main(["promote", with_model.info.run_id, "--model", "demand", "--alias", "challenger",
                 "--if-gate-passes", "--metric", "loss", "--max-regression", "1%"]) == 1
    with pytest.raises(Exception):
        c.get_model_version_by_alias("demand", "challenger")


CI_CONFIG = """
[tool.cd4ml_nb]
ci_notebooks = ["model.ipynb"]
ci_params = "smoke.yaml"
ci_gate = [{{metric = "loss", goal = "minimize", max_regression = "5%"}}]
ci_nbval = {nbval}
"""


@pytest.fixture
def ci_repo(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    repo = init_repo(tmp_path / "ci", branch="master")
    write_ipynb(repo / "model.ipynb", NOTEBOOK)
    (repo / "pyproject.toml").write_text(CI_CONFIG.format(nbval="false"))
    (repo / "smoke.yaml").write_text("loss: 1.0\n")
    monkeypatch.chdir(repo)
    assert main(["pair", "model.ipynb"]) == 0
    commit_all(repo)
    # the base branch's smoke run (loss 1.0): what ci on a branch is compared with
    assert main(["ci", "--report", str(tmp_path / "base-report.md")]) == 0
    git(repo, "checkout", "-q", "-b", "feature")
    return repo


def test_ci_fails_at_the_pair_check(ci_repo, capsys):
    py = ci_repo / "model.py"
    py.write_text(py.read_text().replace("seed: int = 0", "seed: int = 1"))
    assert main(["ci"]) == 3
    assert "ci FAILED at the pair check" in capsys.readouterr().out


@pytest.mark.parametrize("config, args, written", [
    ("", [], ".cd4ml/ci-report.md"),
    ('ci_report = "review/ci.md"\n', ["--report", "out/r.md"], "out/r.md"),
], ids=["default", "flag-over-config"])
def test_ci_fails_at_the_gate_on_a_regression(ci_repo, capsys, config, args, written):
    """The report goes where --report (relative to the current folder) says, else ci_report, else to
    the git-ignored state folder: by default ci leaves the work tree as it found it."""
    (ci_repo / "pyproject.toml").write_text(CI_CONFIG.format(nbval="false") + config)
    (ci_repo / "smoke.yaml").write_text("loss: 1.5\n")
    before = git(ci_repo, "status", "--porcelain", "--untracked-files=all")
    assert main(["ci", *args]) == 6
    out = capsys.readouterr().out
    assert "FAIL model.ipynb loss" in out and "ci FAILED at the gate" in out
    assert f"wrote {written}" in out and "❌ fail" in (ci_repo / written).read_text()
    others = [ci_repo / p for p in ("out/r.md", "review/ci.md", ".cd4ml/ci-report.md") if p != written]
    assert not [p for p in others if p.exists() and "❌ fail" in p.read_text()]  # one report, where it was asked
    new = set(git(ci_repo, "status", "--porcelain", "--untracked-files=all").splitlines()) - set(before.splitlines())
    assert new == ({f"?? {written}"} if args else set())


def test_ci_passes_with_nbval(ci_repo, capsys):
    (ci_repo / "pyproject.toml").write_text(CI_CONFIG.format(nbval="true") + 'ci_report = "review/ci.md"\n')
    assert main(["ci"]) == 0
    out = capsys.readouterr().out
    assert "== ci: nbval ==" in out and "ci passed" in out
    assert not (ci_repo / "mlflow.db").exists()  # nbval's runs went to a scratch store, not the work tree
    assert "✅ pass" in (ci_repo / "review" / "ci.md").read_text()  # ci_report: relative to the root
