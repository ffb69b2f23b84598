"""`cd4ml-nb ui` serves the MLflow UI on the project's store, on 127.0.0.1."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request

import pytest

from nbfactory import free_port, init_repo, wait_http


def test_ui_serves_the_project_store(tmp_path):
    repo = init_repo(tmp_path / "ui")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen([sys.executable, "-m", "cd4ml_nb.cli", "ui", "--no-browser", "--port", str(port)],
                            cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        try:
            wait_http(f"http://127.0.0.1:{port}/health", 180, proc=proc)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{proc.stdout.read() if proc.poll() is not None else ''}") from None
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/search?max_results=5",
                                    timeout=10) as response:
            assert response.status == 200
        assert (repo / ".cd4ml" / "mlflow.db").exists()
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole foreground group
        proc.wait(timeout=30)
    assert f"http://127.0.0.1:{port}" in proc.stdout.read()
    assert proc.returncode == 130  # interrupted, as documented


@pytest.mark.parametrize("command", [["ui", "--no-browser"], ["server"]], ids=["ui", "server"])
def test_sigterm_stops_the_whole_process_tree_and_exits_130(tmp_path, command):
    """`cd4ml-nb ui` / `cd4ml-nb server` under a process manager: SIGTERM to it ends mlflow and every
    worker it started, and the exit code says interrupted (130)."""
    import psutil

    from nbfactory import wait_until

    repo = init_repo(tmp_path / "tree")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen([sys.executable, "-m", "cd4ml_nb.cli", *command, "--port", str(port)],
                            cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tree = []
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 180, proc=proc)
        tree = psutil.Process(proc.pid).children(recursive=True)
        assert tree, "mlflow runs as a child process"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 130
        wait_until(lambda: not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], 60,
                   "every process of the tree ending", ignore=(psutil.NoSuchProcess,))
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in tree:  # only what this test started, by pid
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
