"""A Jupyter server with jupyter-collaboration, and headless Yjs clients of its notebook rooms."""
from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Awaitable, Callable

from nbfactory import free_port, jupyter_port, stop_group, wait_http

TOKEN = "t"
EXTENSIONS = {"jupyter_server_fileid": True, "jupyter_server_ydoc": True, "jupyterlab_jupytext": True,
              "cd4ml_nb": True}


class Server:
    """`jupyter server` over ``root`` with jupyter-collaboration, Jupytext and cd4ml_nb."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = Path(tempfile.mkdtemp(prefix="cd4ml-collab-"))
        (self.home / "config").mkdir()
        (self.home / "data").mkdir()
        (self.home / "config" / "jupyter_server_config.json").write_text(json.dumps(
            {"ServerApp": {"jpserver_extensions": EXTENSIONS}}))
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.home), "JUPYTER_RUNTIME_DIR": str(self.home / "runtime"),
               "JUPYTER_CONFIG_DIR": str(self.home / "config"), "JUPYTER_DATA_DIR": str(self.home / "data")}
        env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
        self.log = (self.home / "server.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root", f"--port={free_port()}",
             "--ip=127.0.0.1", f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}"],
            cwd=self.home, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.port = jupyter_port(self.home / "runtime", self.proc)
        self.url = f"http://127.0.0.1:{self.port}"
        wait_http(f"{self.url}/api/status?token={TOKEN}", proc=self.proc)

    def server_log(self) -> str:
        self.log.flush()
        return (self.home / "server.log").read_text()

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}/{path}", data=data, method=method,
                                     headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def stop(self) -> None:
        stop_group(self.proc)
        self.log.close()
        shutil.rmtree(self.home, ignore_errors=True)


@asynccontextmanager
async def client(server: Server, path: str):
    """A headless collaborator on notebook ``path``: yields its synced ``YNotebook``."""
    from jupyter_ydoc import YNotebook
    from pycrdt import Doc, Provider
    from tornado.websocket import websocket_connect

    code, session = await asyncio.to_thread(server.request, "PUT", f"api/collaboration/session/{path}",
                                            {"format": "json", "type": "notebook"})
    assert code in (200, 201), (session, server.server_log()[-3000:])
    room = f"json:notebook:{session['fileId']}"
    url = f"ws://127.0.0.1:{server.port}/api/collaboration/room/{room}?sessionId={session['sessionId']}&token={TOKEN}"
    ydoc = Doc()
    notebook = YNotebook(ydoc)
    ws = await websocket_connect(url)
    try:
        async with Provider(ydoc, Channel(ws, room)):
            await until(lambda: notebook.cell_number > 0, "the client synced")
            yield notebook
    finally:
        ws.close()


class Channel:
    """A tornado websocket as a pycrdt channel."""

    def __init__(self, ws, path: str) -> None:
        self.ws, self.path = ws, path

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        message = await self.ws.read_message()
        if message is None:
            raise StopAsyncIteration
        return message

    async def send(self, message: bytes) -> None:
        await self.ws.write_message(message, binary=True)

    async def recv(self) -> bytes:
        return await self.__anext__()


async def until(predicate: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    """Poll ``predicate`` (sync or async) until truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: did not happen within {timeout:.0f} s")
        await asyncio.sleep(0.05)


def sources(notebook) -> list[str]:
    """The cell sources of a live ``YNotebook``."""
    return [str(cell["source"]) for cell in notebook.ycells]


def edit_cell(notebook, index: int, text: str) -> None:
    """Replace the source of one cell as a typist would (one Yjs transaction)."""
    ytext = notebook.ycells[index]["source"]
    with notebook.ydoc.transaction():
        ytext.clear()
        ytext.insert(0, text)
