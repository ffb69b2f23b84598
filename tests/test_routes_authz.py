"""An authorizer that denies everything: every cd4ml-nb route answers 403."""
from __future__ import annotations

import pytest
from jupyter_server.auth.authorizer import Authorizer
from tornado.httpclient import HTTPClientError

from cd4ml_nb.routes import NAMESPACE, ROUTES


class DenyAll(Authorizer):
    def is_authorized(self, handler, user, action, resource):
        return False


@pytest.fixture
def jp_server_config(jp_server_config):
    return {
        "ServerApp": {
            "jpserver_extensions": {"cd4ml_nb": True},
            "allow_unauthenticated_access": False,
            "authorizer_class": DenyAll,
        }
    }


@pytest.mark.parametrize("path, handler", ROUTES)
async def test_denied_by_the_authorizer(jp_fetch, path, handler):
    url = path.replace("([^/]+)", "0123456789ab")
    for method in ("GET", "POST", "DELETE"):
        if method.lower() not in handler.__dict__:
            continue
        with pytest.raises(HTTPClientError) as info:
            await jp_fetch(NAMESPACE, url, method=method, body="{}" if method == "POST" else None,
                           allow_nonstandard_methods=True)
        assert info.value.code == 403, (url, method)
