"""Shared fixtures: real git repositories, real MLflow stores, a real Jupyter server."""
from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path
from typing import Callable

import pytest

pytest_plugins = ("pytest_jupyter.jupyter_server",)


@pytest.fixture
def jp_server_config(jp_server_config):
    return {
        "ServerApp": {
            "jpserver_extensions": {"cd4ml_nb": True},
            "allow_unauthenticated_access": False,
        }
    }


# pytest-asyncio 1.x runs tests in a different loop from pytest-jupyter's
# session fixtures; re-create the server in the test's loop
# (same workaround as jupyterlab-git's tests/conftest.py).
@pytest.fixture
async def http_server(http_server_port, jp_web_app):
    import tornado.httpserver

    server = tornado.httpserver.HTTPServer(jp_web_app)
    server.add_socket(http_server_port[0])
    yield server
    server.stop()


@pytest.fixture
async def http_server_client(http_server):
    from contextlib import closing

    from pytest_jupyter.pytest_tornasync import AsyncHTTPServerClient

    client = AsyncHTTPServerClient(http_server=http_server)
    with closing(client) as context:
        yield context


@pytest.fixture
def here(repo, monkeypatch):
    """In the module's ``repo``, with no ambient tracking URI."""
    monkeypatch.chdir(repo)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return repo


@pytest.fixture(autouse=True)
def _tracking_uri_restored():
    """``mlflow.set_tracking_uri`` and ``mlflow.set_experiment`` (which ``cd4ml_nb.track()`` calls
    in-process) also set ``MLFLOW_TRACKING_URI`` and ``MLFLOW_EXPERIMENT_ID``: put them back after
    each test so they leak into no later one (a later kernel would log to that experiment)."""
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")
    before = {name: os.environ.get(name) for name in names}
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def _store_template(tmp_path_factory) -> Path:
    """One embedded store built by the product's own code (``store.ensure_sqlite``), per session."""
    from cd4ml_nb import store

    where = tmp_path_factory.mktemp("store-template")
    db = where / "mlflow.db"
    store.ensure_sqlite(store.uri_of(db), (where / "artifacts").as_uri())
    return db


@pytest.fixture
def seed_store(_store_template) -> Callable[[Path], Path]:
    """``seed_store(repo)`` gives ``repo`` the embedded store (``.cd4ml/mlflow.db``) its first run
    would build, complete and empty: a copy of one built per session, since building and migrating
    a new store costs 2-9 s a test. The Default experiment's artifact folder is the repository's own,
    as the product writes it. Tests about creating the store (or about none being created) do not seed."""
    from cd4ml_nb.project import ignored_folder

    def seed(repo: Path) -> Path:
        state = ignored_folder(repo / ".cd4ml")
        db = state / "mlflow.db"
        shutil.copyfile(_store_template, db)
        with sqlite3.connect(db) as connection:
            connection.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                               ((state / "artifacts").as_uri() + "/0",))
        connection.close()
        return db

    return seed
