"""The MLflow UI of the embedded store, started on demand and proxied under `/cd4ml-nb/mlflow/`:
refused without credentials (and nothing started), MLflow's UI and REST served with them, from a
real `mlflow server` on a real store with a run; its whole process tree ends with `stop()`."""
from __future__ import annotations

import json
import re

import psutil
import pytest
from tornado.httpclient import HTTPClientError

from cd4ml_nb.project import Project
from cd4ml_nb.routes import NAMESPACE

from nbfactory import commit_all, init_repo

RUN_NAME = "proxied-random-forest"


@pytest.fixture
def jp_root_dir(tmp_path):
    """A project whose embedded store holds one finished run with a metric."""
    from cd4ml_nb import tracking

    root = init_repo(tmp_path / "served", branch="try-random-forest")
    (root / "README.md").write_text("x\n")
    commit_all(root)
    project = Project.discover(root)
    c = tracking.client(project)
    experiment = tracking.ensure_experiment(c, project, "try-random-forest")
    run = c.create_run(experiment, run_name=RUN_NAME)
    c.log_metric(run.info.run_id, "nwrmsle", 0.25)
    c.set_terminated(run.info.run_id)
    (root / "run.json").write_text(json.dumps({"experiment": experiment, "run": run.info.run_id}))
    return root


@pytest.fixture
def ui(jp_serverapp, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    manager = jp_serverapp.web_app.settings["cd4ml_nb"].mlflow_ui
    yield manager
    manager.stop()


async def test_refused_without_credentials_and_nothing_started(http_server_client, jp_base_url, ui):
    for method, body in (("GET", None), ("POST", b'{"experiment_ids": ["0"]}')):
        for headers in ({}, {"Authorization": "token wrong"}):
            with pytest.raises(HTTPClientError) as info:
                await http_server_client.fetch(f"{jp_base_url}{NAMESPACE}/mlflow/ajax-api/2.0/mlflow/runs/search",
                                               method=method, body=body, headers=headers, follow_redirects=False)
            assert info.value.code in (401, 403), (method, headers)
    assert ui.running is None, "an unauthenticated request started the MLflow UI"


async def test_serves_the_ui_and_its_rest_then_stops(jp_fetch, jp_root_dir, ui):
    ids = json.loads((jp_root_dir / "run.json").read_text())
    page = await jp_fetch(NAMESPACE, "mlflow/", request_timeout=240)  # starts it
    assert page.code == 200 and page.headers["Content-Type"].startswith("text/html")
    html = page.body.decode()
    assert "default-src 'none'" not in page.headers["Content-Security-Policy"], "the UI's scripts would be blocked"
    scripts = re.findall(r'src="([^"]*static-files/[^"]+\.js)"', html)
    assert scripts, html[:500]
    assert not any(s.startswith(("/", "http")) for s in scripts), "the UI's assets must resolve under the proxy"
    script = await jp_fetch(NAMESPACE, "mlflow", scripts[0].lstrip("./"))
    assert script.code == 200 and "javascript" in script.headers["Content-Type"] and len(script.body) > 1000

    # MLflow's REST as its UI calls it (ajax-api), against the real store.
    got = await jp_fetch(NAMESPACE, "mlflow", "ajax-api/2.0/mlflow/runs/get", params={"run_id": ids["run"]})
    run = json.loads(got.body)["run"]
    assert run["info"]["run_name"] == RUN_NAME and run["data"]["metrics"][0]["value"] == 0.25
    assert "sandbox" in got.headers["Content-Security-Policy"], "data responses are sandboxed"
    found = await jp_fetch(NAMESPACE, "mlflow", "ajax-api/2.0/mlflow/runs/search", method="POST",
                           body=json.dumps({"experiment_ids": [ids["experiment"]]}),
                           headers={"Content-Type": "application/json"})
    assert [r["info"]["run_id"] for r in json.loads(found.body)["runs"]] == [ids["run"]]

    # One `mlflow server` on 127.0.0.1 for the Jupyter server, with the store the project uses.
    running = ui.running
    assert running is not None and running.tracking_uri == f"sqlite:///{jp_root_dir / '.cd4ml' / 'mlflow.db'}"
    tree = [psutil.Process(running.pid), *psutil.Process(running.pid).children(recursive=True)]
    assert any(c.laddr.ip == "127.0.0.1" and c.laddr.port == running.port and c.status == psutil.CONN_LISTEN
               for p in tree for c in p.net_connections()), "the UI listens on 127.0.0.1 only"
    again = await jp_fetch(NAMESPACE, "mlflow", "ajax-api/2.0/mlflow/runs/get", params={"run_id": ids["run"]})
    assert again.code == 200 and ui.running.pid == running.pid, "started once, then reused"

    ui.stop()
    assert not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], "left processes behind"
    assert ui.running is None


async def test_a_tracking_server_is_not_proxied(jp_fetch, jp_root_dir, ui, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch(NAMESPACE, "mlflow/")
    assert info.value.code == 404
    assert "own UI" in json.loads(info.value.response.body)["message"]
    assert ui.running is None


async def test_errors_of_mlflow_are_json_messages(jp_fetch, jp_root_dir, ui):
    """Like every route: a 4xx has a JSON `message` (MLflow's own JSON errors pass as they are)."""
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch(NAMESPACE, "mlflow", "no-such-page", request_timeout=240)
    assert info.value.code == 404
    assert info.value.response.headers["Content-Type"].startswith("application/json")
    assert json.loads(info.value.response.body)["message"] == "MLflow UI: 404 Not Found"
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch(NAMESPACE, "mlflow", "ajax-api/2.0/mlflow/runs/get", params={"run_id": "0" * 32})
    assert info.value.code == 404
    assert json.loads(info.value.response.body)["error_code"] == "RESOURCE_DOES_NOT_EXIST"
