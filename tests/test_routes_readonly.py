"""A read-only authorizer: reads are allowed, every mutation is 403 and changes nothing."""
from __future__ import annotations

import json

import pytest
from jupyter_server.auth.authorizer import Authorizer
from tornado.httpclient import HTTPClientError

from cd4ml_nb.routes import NAMESPACE

from nbfactory import commit_all, init_repo, percent, write_ipynb


class ReadOnly(Authorizer):
    def is_authorized(self, handler, user, action, resource):
        return action == "read"


@pytest.fixture
def jp_server_config(jp_server_config):
    return {"ServerApp": {"jpserver_extensions": {"cd4ml_nb": True}, "allow_unauthenticated_access": False,
                          "authorizer_class": ReadOnly}}


@pytest.fixture
def jp_root_dir(tmp_path):
    root = init_repo(tmp_path / "served")
    write_ipynb(root / "nb.ipynb", percent("x = 1", parameters="a: int = 1"))
    commit_all(root)
    return root


async def test_reads_allowed_mutations_refused(jp_fetch, jp_root_dir):
    response = await jp_fetch(NAMESPACE, "params", params={"path": "nb.ipynb"})
    assert json.loads(response.body)["parameters"][0]["name"] == "a"
    for parts, method, body in ((("pairing",), "POST", {"path": "nb.ipynb"}),
                                (("jobs",), "POST", {"path": "nb.ipynb", "parameters": {}}),
                                (("jobs", "0123456789ab"), "DELETE", None)):
        with pytest.raises(HTTPClientError) as info:
            await jp_fetch(NAMESPACE, *parts, method=method, body=None if body is None else json.dumps(body),
                           allow_nonstandard_methods=True)
        assert info.value.code == 403
    assert not (jp_root_dir / "nb.py").exists() and not (jp_root_dir / ".cd4ml" / "jobs").exists()
