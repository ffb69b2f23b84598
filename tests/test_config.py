"""Configuration: `[tool.cd4ml_nb]`, MLFLOW_TRACKING_URI and flags, in that order."""
from __future__ import annotations

import json

import pytest

from cd4ml_nb import gitinfo, tracking
from cd4ml_nb.cli import main
from cd4ml_nb.exceptions import ConfigError
from cd4ml_nb.project import Project

from nbfactory import commit_all, init_repo, percent, write_ipynb


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    repo = init_repo(tmp_path / "proj", branch="change-max-depth")
    (repo / "pyproject.toml").write_text(
        '[tool.cd4ml_nb]\nexperiment_template = "{project}/{branch}"\ntracking_uri = "sqlite:///from-config.db"\n'
        'base_branch = "develop"\n'
    )
    commit_all(repo)
    return repo


def test_precedence(repo, monkeypatch, tmp_path):
    """Relative SQLite paths become absolute: from the project root in pyproject.toml, from the
    current folder in the environment or a flag (MLflow's meaning), so kernels open the same file."""
    project = Project.discover(repo)
    assert project.tracking_uri == f"sqlite:///{repo / 'from-config.db'}" and project.base_branch == "develop"
    assert tracking.experiment_name(project, gitinfo.inspect(repo)) == "proj/change-max-depth"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///from-env.db")
    assert Project.discover(repo).tracking_uri == f"sqlite:///{tmp_path / 'from-env.db'}"
    flag = Project.discover(repo, tracking_uri="sqlite:///sub/from-flag.db?mode=rwc").tracking_uri
    assert flag == f"sqlite:///{tmp_path / 'sub' / 'from-flag.db'}?mode=rwc"
    absolute = f"sqlite:///{tmp_path / 'abs.db'}"
    assert Project.discover(repo, tracking_uri=absolute).tracking_uri == absolute


def test_defaults_without_config(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    repo = init_repo(tmp_path / "plain", branch="main")
    (repo / "a").write_text("a")
    commit_all(repo)
    project = Project.discover(repo)
    assert project.tracking_uri == f"sqlite:///{repo / '.cd4ml' / 'mlflow.db'}"
    assert project.base_branch == "main" and project.mlflow_ui_url is None


@pytest.mark.parametrize("table, fragment", [
    ('bogus = 1', "unknown key(s) in [tool.cd4ml_nb]: bogus"),
    ('html = "maybe"', "[tool.cd4ml_nb] html = 'maybe'"),
    ('experiment_template = "{nope}"', None),
])
def test_bad_config_is_a_clear_error(tmp_path, table, fragment, monkeypatch):
    repo = init_repo(tmp_path / "bad")
    (repo / "pyproject.toml").write_text(f"[tool.cd4ml_nb]\n{table}\n")
    if fragment:
        with pytest.raises(ConfigError) as info:
            Project.discover(repo)
        assert fragment in str(info.value) and "pyproject.toml" in str(info.value)
    else:
        with pytest.raises(Exception, match="use the fields"):
            tracking.experiment_name(Project.discover(repo), gitinfo.inspect(repo))


def test_detached_head_takes_the_ci_branch(tmp_path, monkeypatch):
    repo = init_repo(tmp_path / "ci")
    (repo / "a").write_text("a")
    sha = commit_all(repo)
    from nbfactory import git

    git(repo, "checkout", "-q", sha)
    for name in gitinfo.CI_BRANCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert gitinfo.current_branch(repo) is None
    monkeypatch.setenv("GITHUB_HEAD_REF", "try-random-forest")
    assert gitinfo.current_branch(repo) == "try-random-forest"


def test_params_command_on_either_side(tmp_path, monkeypatch, capsys):
    repo = init_repo(tmp_path / "p")
    write_ipynb(repo / "nb.ipynb", percent("pass", parameters="depth: int = 3  # tree depth\nextra = None"))
    monkeypatch.chdir(repo)
    assert main(["pair", "nb.ipynb"]) == 0
    capsys.readouterr()
    for side in ("nb.ipynb", "nb.py"):
        assert main(["params", side, "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert [(p["name"], p["type"], p["default"], p["help"]) for p in data["parameters"]] == [
            ("depth", "int", 3, "tree depth"), ("extra", "any", None, "")]
    assert main(["params", "nb.py"]) == 0
    assert "tree depth" in capsys.readouterr().out
