"""`diff`, `reproduce` and `promote` take run ids as `cd4ml-nb runs` prints them: any unique prefix.

Real git repository, real SQLite store; runs are recorded through the project's own tracking
functions (no kernel needed to resolve an id).
"""
from __future__ import annotations

import json
import uuid

import pytest

from cd4ml_nb import gitinfo, tracking
from cd4ml_nb.cli import main
from cd4ml_nb.project import Project

from nbfactory import commit_all, init_repo, percent, write_ipynb


def record_run(repo, notebook: str, metrics: dict[str, float], model: bool = False, git_tags: bool = True) -> str:
    """A FINISHED run of ``notebook`` on the current branch, as `cd4ml-nb run` tags it."""
    project = Project.discover(repo)
    c = tracking.client(project)
    git = gitinfo.inspect(repo)
    experiment = tracking.ensure_experiment(c, project, tracking.experiment_name(project, git))
    tags = tracking.provenance_tags(project, git if git_tags else None, notebook)
    run_id = tracking.create_run(c, experiment, notebook, tags, {"seed": 0}).info.run_id
    for key, value in metrics.items():
        c.log_metric(run_id, key, value)
    if model:
        c.create_logged_model(experiment, name="model", source_run_id=run_id)
    tracking.end_run(c, run_id, "FINISHED")
    return run_id


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    repo = init_repo(tmp_path / "repo", branch="master")
    write_ipynb(repo / "model.ipynb", percent("import mlflow\nmlflow.log_metric('loss', 1.0)"))
    commit_all(repo, "model notebook")
    monkeypatch.chdir(repo)
    return repo


def test_diff_takes_the_prefixes_runs_prints(repo, capsys):
    a, b = record_run(repo, "model.ipynb", {"loss": 1.0}), record_run(repo, "model.ipynb", {"loss": 1.5})
    assert main(["diff", a[:12], b[:6], "--json"]) == 0, capsys.readouterr().err
    out = json.loads(capsys.readouterr().out)
    assert (out["run_a"], out["run_b"]) == (a, b)
    assert out["metrics"]["loss"] == [1.0, 1.5]


def test_promote_takes_a_prefix(repo, capsys):
    run_id = record_run(repo, "model.ipynb", {"loss": 1.0}, model=True)
    assert main(["promote", run_id[:8], "--model", "demand"]) == 0, capsys.readouterr().err
    c = tracking.client(Project.discover(repo))
    assert c.get_model_version_by_alias("demand", "champion").run_id == run_id


def test_reproduce_resolves_a_prefix_before_it_looks_at_the_run(repo, capsys):
    run_id = record_run(repo, "model.ipynb", {"loss": 1.0}, git_tags=False)
    assert main(["reproduce", run_id[:10], "-q"]) == 2
    err = capsys.readouterr().err
    assert f"run {run_id} has no mlflow.source.git.commit tag" in err  # found, by its full id


def test_a_prefix_of_several_runs_is_exit_2_listing_them(repo, capsys, monkeypatch):
    ids = iter(["abcdef01" + "0" * 24, "abcdef02" + "0" * 24])
    with monkeypatch.context() as m:  # MLflow draws run ids from uuid4: give it two that share a prefix
        m.setattr(uuid, "uuid4", lambda: uuid.UUID(next(ids)))
        a = record_run(repo, "model.ipynb", {"loss": 1.0})
        b = record_run(repo, "model.ipynb", {"loss": 2.0})
    assert (a[:8], b[:8]) == ("abcdef01", "abcdef02")
    for argv in (["diff", "abcdef", b], ["reproduce", "abcdef0", "-q"], ["promote", "ABCDEF", "--model", "m"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "is ambiguous" in err and "abcdef01" in err and "abcdef02" in err, argv
    assert main(["diff", "abcdef01", "abcdef02", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run_b"] == b


@pytest.mark.parametrize("argv, fragment", [
    (["diff", "abc12", "abc123"], "too short"),
    (["diff", "0123456789ab", "0123456789ac"], "no run"),
    (["promote", "zz1234", "--model", "m"], "is not a run id"),
])
def test_unusable_ids_are_exit_2(repo, capsys, argv, fragment):
    record_run(repo, "model.ipynb", {"loss": 1.0})
    assert main(argv) == 2
    assert fragment in capsys.readouterr().err
