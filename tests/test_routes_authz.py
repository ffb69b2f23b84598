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


@pytest.mark.parametrize("path", [p for p, _ in ROUTES])
async def test_denied_by_the_authorizer(jp_fetch, path):
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch(NAMESPACE, path)
    assert info.value.code == 403
