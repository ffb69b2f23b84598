"""Team mode: a model logged through the journal reaches the real `mlflow server` so that `promote` works."""
from __future__ import annotations

import os
import signal

import reliability_suite as suite

from cd4ml_nb.cli import main

from nbfactory import free_port, mlflow_server
from test_team_live import source_plugins

MODEL = suite.percent(
    "import mlflow, mlflow.sklearn\nfrom sklearn.dummy import DummyRegressor\nmlflow.log_metric('loss', 0.5)\n"
    "mlflow.sklearn.log_model(DummyRegressor().fit([[0.0]], [1.0]), name='model', serialization_format='cloudpickle',"
    " pip_requirements=['scikit-learn'])")


def test_model_logged_through_the_journal_can_be_promoted(tmp_path, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    source_plugins(tmp_path, monkeypatch)

    repo = suite.make_repo(tmp_path)
    (repo / "model.py").write_text(MODEL)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = mlflow_server(repo, port)
    monkeypatch.chdir(repo)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    try:
        assert main(["run", "model.py", "-q", "--no-html", "--tracking-uri", uri]) == 0
        c = MlflowClient(uri)
        (run,) = c.search_runs([c.get_experiment_by_name("master").experiment_id])
        assert run.info.status == "FINISHED" and run.data.metrics == {"loss": 0.5}
        (model,) = c.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'")
        assert model.name == "model" and "READY" in str(model.status) and run.data.tags.get("cd4ml.model.hash")
        assert not list((repo / ".cd4ml" / "spool").iterdir())  # uploaded, nothing pending
        assert main(["promote", run.info.run_id, "--model", "team-model", "--tracking-uri", uri]) == 0
        version = MlflowClient(uri, registry_uri=uri).get_model_version_by_alias("team-model", "champion")
        assert version.run_id == run.info.run_id
    finally:
        os.killpg(server.pid, signal.SIGKILL)
