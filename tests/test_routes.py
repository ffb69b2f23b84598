"""Server extension: every route authenticated; `GET /cd4ml-nb/status` reports the branch."""
from __future__ import annotations

import json

import pytest
from tornado.httpclient import HTTPClientError

from cd4ml_nb.routes import NAMESPACE, ROUTES

from nbfactory import commit_all, init_repo

METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture
def jp_root_dir(tmp_path):
    root = init_repo(tmp_path / "served", branch="try-random-forest")
    (root / "README.md").write_text("x\n")
    commit_all(root)
    return root


async def test_status_reports_branch_and_store(jp_fetch, jp_root_dir, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    response = await jp_fetch(NAMESPACE, "status")
    assert response.code == 200
    data = json.loads(response.body)
    assert data["branch"] == "try-random-forest"
    assert data["base_branch"] == "master"
    assert data["tracking_uri"] == f"sqlite:///{jp_root_dir / '.cd4ml' / 'mlflow.db'}"
    assert data["mlflow_ui_url"] is None and data["version"]


def _implemented(handler) -> list[str]:
    from jupyter_server.base.handlers import APIHandler

    return [m for m in METHODS if getattr(handler, m) is not getattr(APIHandler, m)]


@pytest.mark.parametrize("path, handler", ROUTES)
async def test_every_route_refuses_requests_without_credentials(http_server_client, jp_base_url, path, handler):
    methods = _implemented(handler)
    assert methods, f"{handler.__name__} implements no verb"
    for method in methods:
        body = b"{}" if method in ("post", "put", "patch") else None
        for headers in ({}, {"Authorization": "token wrong"}):
            with pytest.raises(HTTPClientError) as info:
                await http_server_client.fetch(
                    f"{jp_base_url}{NAMESPACE}/{path}", method=method.upper(), body=body, headers=headers
                )
            assert info.value.code in (401, 403), (path, method, headers)


@pytest.mark.parametrize("path, handler", ROUTES)
def test_every_verb_is_decorated_authenticated_then_authorized(path, handler):
    from jupyter_server.serverapp import _has_tornado_web_authenticated

    for name in _implemented(handler):
        method = getattr(handler, name)
        assert _has_tornado_web_authenticated(method), f"{handler.__name__}.{name} lacks @tornado.web.authenticated"
        inner = method.__wrapped__
        assert inner.__code__.co_qualname.startswith("authorized"), f"{handler.__name__}.{name} lacks @authorized"
