"""The papermill engine cd4ml-nb registers once: kernels get their folder without the process
changing directory, MLflow loads in the kernel only when the notebook uses it, and runs sharing
a process (sweep trials, Lab jobs) do not disturb one another. Real kernels, real stores."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from cd4ml_nb import kernels
from cd4ml_nb.cli import main
from cd4ml_nb.runner import RunOptions, run_notebook

from nbfactory import commit_all, init_repo, percent, wait_until, write_ipynb

WAITS_IN_ITS_FOLDER = percent(
    "import json, os, pathlib, time\n"
    "here = os.getcwd()\n"
    "pathlib.Path(os.environ['REPORT_DIR'], pathlib.Path(here).name).write_text(here)\n"
    "go = pathlib.Path(os.environ['REPORT_DIR'], 'go')\n"
    "while not go.exists():\n"
    "    time.sleep(0.05)\n"
    "print(json.dumps(here))",
)

NO_MLFLOW = percent("import sys\nprint('mlflow' in sys.modules)")

USES_MLFLOW_LATER = percent(
    "import sys\nprint('mlflow' in sys.modules)",
    "import mlflow\nmlflow.log_metric('m', 1.5)\nprint(mlflow.active_run().info.run_id)",
)


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    repo = init_repo(tmp_path / "repo")
    for folder in ("a", "b"):
        (repo / folder).mkdir()
        write_ipynb(repo / folder / "waits.ipynb", WAITS_IN_ITS_FOLDER)
    write_ipynb(repo / "plain.ipynb", NO_MLFLOW)
    write_ipynb(repo / "later.ipynb", USES_MLFLOW_LATER)
    commit_all(repo)
    return repo


def _outputs(executed: Path) -> list[str]:
    """What the code cells printed (stdout)."""
    nb = json.loads(executed.read_text())
    return ["".join(o["text"]) for cell in nb["cells"] if cell["cell_type"] == "code"
            for o in cell.get("outputs", []) if o.get("name") == "stdout"]


def test_concurrent_runs_in_two_folders_keep_the_process_directory(repo, tmp_path, monkeypatch):
    reports = tmp_path / "reports"
    reports.mkdir()
    monkeypatch.setenv("REPORT_DIR", str(reports))
    start = tmp_path / "elsewhere"
    start.mkdir()
    monkeypatch.chdir(start)
    results: dict[str, object] = {}

    def run(folder: str) -> None:
        results[folder] = run_notebook(repo / folder / "waits.ipynb", options=RunOptions(progress=False, html=False))

    threads = [threading.Thread(target=run, args=(folder,)) for folder in ("a", "b")]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: (reports / "a").exists() and (reports / "b").exists(), 300, "both kernels running")
        assert os.getcwd() == str(start)  # papermill's cwd= would have moved the whole process
        assert (reports / "a").read_text() == str(repo / "a")
        assert (reports / "b").read_text() == str(repo / "b")
    finally:
        (reports / "go").touch()
        for t in threads:
            t.join(timeout=300)
    assert os.getcwd() == str(start)
    for folder in ("a", "b"):
        result = results[folder]
        assert result.status == "FINISHED", result.error
        assert json.dumps(str(repo / folder)) in _outputs(result.executed)[-1]


def test_the_kernel_loads_mlflow_only_when_the_notebook_does(repo, seed_store):
    seed_store(repo)  # creating the store is the concurrent test's
    plain = run_notebook(repo / "plain.ipynb", options=RunOptions(progress=False, html=False))
    assert plain.status == "FINISHED", plain.error
    assert _outputs(plain.executed) == ["False\n"]

    later = run_notebook(repo / "later.ipynb", options=RunOptions(progress=False, html=False))
    assert later.status == "FINISHED", later.error
    first, attached = _outputs(later.executed)
    assert first == "False\n"
    assert attached.strip() == later.run_id  # imported late, mlflow still logs to this execution's run
    assert later.metrics == {"m": 1.5}
    executed = json.loads(later.executed.read_text())["cells"]  # the set-up ran silently: no cell of its own
    assert [c["execution_count"] for c in executed] == [1, 2]
    assert not any("cd4ml" in json.dumps(c["metadata"]) for c in executed)


TRANSPORT = percent(
    "import json\nfrom ipykernel.connect import get_connection_info\n"
    "info = get_connection_info(unpack=True)\nprint(json.dumps([info['transport'], info['ip']]))",
)

# Kernelspecs of real kernels that are not a Python interpreter running ipykernel itself.
WRAPPED_SPECS = {
    "wrapped": [sys.executable, "-c", "from ipykernel.kernelapp import launch_new_instance as go; go()",
                "-f", "{connection_file}"],
    "env-wrapped": ["env", "PYTHONUNBUFFERED=1", sys.executable, "-m", "ipykernel_launcher",
                    "-f", "{connection_file}"],
}


@pytest.fixture
def transport_notebooks(repo, tmp_path, monkeypatch, seed_store):
    """``<kernel>.ipynb`` printing its transport and address, for python3 and the wrapped kernels."""
    seed_store(repo)
    import nbformat

    share = tmp_path / "share" / "jupyter"
    for name, argv in WRAPPED_SPECS.items():
        spec = share / "kernels" / name
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": name, "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(share))
    for name in ("python3", *WRAPPED_SPECS):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(TRANSPORT.split("# %%\n")[-1])])
        nb.metadata["kernelspec"] = {"name": name, "display_name": name, "language": "python"}
        nbformat.write(nb, repo / f"{name}.ipynb")
    commit_all(repo, "transport notebooks")
    return repo


def _transport(repo: Path, name: str) -> list[str]:
    """[transport, address] of a finished run of ``<name>.ipynb``."""
    result = run_notebook(repo / f"{name}.ipynb", options=RunOptions(progress=False, html=False))
    assert result.status == "FINISHED", result.error
    return json.loads(_outputs(result.executed)[0])


def _configure(repo: Path, text: str) -> None:
    (repo / "pyproject.toml").write_text(f"[tool.cd4ml_nb]\n{text}\n")
    commit_all(repo, "configure")


def test_ipykernel_talks_over_private_unix_sockets_other_kernels_over_tcp(transport_notebooks, tmp_path,
                                                                         monkeypatch, capfd):
    """TCP ports are picked by binding and releasing them, so concurrent runs could pick the same
    one; an ipykernel kernel gets Unix sockets in a private folder, removed after the run. A kernel
    command wrapping the interpreter (docker run, srun, conda run, env) may start it where that
    folder is not: it keeps TCP, and finishes."""
    repo = transport_notebooks
    transport, ip = _transport(repo, "python3")
    assert transport == "ipc" and Path(ip).parent.name.startswith(f"cd4ml-kernel-{os.getpid()}-")
    assert Path(ip).parent.parent == Path(tempfile.gettempdir()) and not Path(ip).parent.exists()
    assert "without encryption" not in capfd.readouterr().err  # ipykernel 7's warning for TCP

    for name in WRAPPED_SPECS:  # ipykernel, but not a Python interpreter running it directly
        assert _transport(repo, name) == ["tcp", "127.0.0.1"], name

    # a temporary folder too deep for a socket's path (sun_path): TCP, and nothing left behind
    deep = tmp_path / ("d" * 90)
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    assert _transport(repo, "python3")[0] == "tcp" and not any(deep.iterdir())


def test_kernel_transport_setting_chooses_tcp_or_forces_ipc(transport_notebooks, tmp_path, monkeypatch, capsys):
    repo = transport_notebooks
    _configure(repo, 'kernel_transport = "tcp"')
    assert _transport(repo, "python3") == ["tcp", "127.0.0.1"]

    _configure(repo, 'kernel_transport = "ipc"')
    transport, ip = _transport(repo, "env-wrapped")  # on this host the wrapper's kernel sees the folder
    assert transport == "ipc" and not Path(ip).parent.exists()

    deep = tmp_path / ("d" * 90)  # forced, but impossible: refused before any run exists
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    monkeypatch.chdir(repo)
    folders = set((repo / ".cd4ml" / "runs").iterdir())
    capsys.readouterr()
    assert main(["run", "python3.ipynb", "-q", "--no-html"]) == 2
    err = capsys.readouterr().err
    assert "kernel_transport = 'ipc'" in err and "TMPDIR" in err
    assert set((repo / ".cd4ml" / "runs").iterdir()) == folders


def test_an_unknown_kernel_transport_is_bad_input_naming_the_allowed_values(repo, monkeypatch, capsys):
    _configure(repo, 'kernel_transport = "udp"')
    monkeypatch.chdir(repo)
    assert main(["run", "plain.ipynb", "-q", "--no-html"]) == 2
    err = capsys.readouterr().err
    assert "kernel_transport = 'udp'" in err and "['auto', 'tcp', 'ipc']" in err


def test_launches_ipykernel_only_for_a_python_running_it_directly():
    kernel = ["-f", "{connection_file}"]
    for argv in (["python", "-m", "ipykernel_launcher", *kernel], ["python3.11", "-m", "ipykernel", *kernel],
                 [sys.executable, "-Xfrozen_modules=off", "-m", "ipykernel_launcher", *kernel],
                 ["{prefix}/bin/python3", "-X", "frozen_modules=off", "-m", "ipykernel_launcher", *kernel],
                 [r"C:\Python313\python.exe", "-m", "ipykernel_launcher", *kernel]):
        assert kernels.launches_ipykernel(argv), argv
    for argv in (["docker", "run", "--rm", "img", "python", "-m", "ipykernel_launcher", *kernel],
                 ["srun", "--pty", "python3", "-m", "ipykernel_launcher", *kernel],
                 ["conda", "run", "-n", "ml", "python", "-m", "ipykernel_launcher", *kernel],
                 ["env", "A=1", sys.executable, "-m", "ipykernel_launcher", *kernel],
                 ["python", "-c", "import ipykernel_launcher", *kernel], ["R", "--slave", "-e", "IRkernel::main()"],
                 ["python", "-m", "ipykernel_launcher_wrapper", *kernel], []):
        assert not kernels.launches_ipykernel(argv), argv


# Writes its kernel's socket address and pid to MARKER, then waits (bounded) for MARKER.go.
SOCKETS = percent(
    "import json, os, pathlib, time\nfrom ipykernel.connect import get_connection_info\n"
    "marker = pathlib.Path(os.environ['MARKER'])\nwriting = marker.with_suffix('.tmp')\n"
    "writing.write_text(json.dumps({'ip': get_connection_info(unpack=True)['ip'], 'pid': os.getpid()}))\n"
    "writing.replace(marker)\ndeadline = time.monotonic() + 300\n"
    "while time.monotonic() < deadline and not marker.with_suffix('.go').exists():\n    time.sleep(0.05)",
)


@pytest.fixture
def short_tmp(monkeypatch):
    """A temporary folder of its own (short enough for sockets), as this process's and children's."""
    folder = Path(tempfile.mkdtemp(prefix="gc"))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.setenv("TMPDIR", str(folder))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_gc_removes_the_socket_folder_of_a_killed_run_not_of_a_live_one(repo, short_tmp, tmp_path, monkeypatch,
                                                                        capsys, seed_store):
    seed_store(repo)
    write_ipynb(repo / "sockets.ipynb", SOCKETS)
    commit_all(repo, "sockets")
    monkeypatch.chdir(repo)
    killed, live = tmp_path / "killed.json", tmp_path / "live.json"
    proc = subprocess.Popen([sys.executable, "-m", "cd4ml_nb.cli", "run", "sockets.ipynb", "-q", "--no-html"],
                            cwd=repo, env={**os.environ, "MARKER": str(killed)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    results: list = []
    thread = None
    try:
        wait_until(killed.exists, 300, "the notebook running", proc=proc)
        orphan = Path(json.loads(killed.read_text())["ip"]).parent
        assert orphan.parent == short_tmp and orphan.name.startswith(f"cd4ml-kernel-{proc.pid}-")
        proc.kill()
        proc.wait(timeout=60)
        assert orphan.is_dir()  # SIGKILL: the runner could not remove it

        monkeypatch.setenv("MARKER", str(live))
        thread = threading.Thread(target=lambda: results.append(
            run_notebook(repo / "sockets.ipynb", options=RunOptions(progress=False, html=False))))
        thread.start()
        wait_until(live.exists, 300, "the live run's notebook running")
        running = Path(json.loads(live.read_text())["ip"]).parent
        assert running.parent == short_tmp and running.is_dir()
        capsys.readouterr()

        assert main(["gc", "--dry-run"]) == 0
        said = capsys.readouterr().out
        assert f"would remove kernel socket folder {orphan.name} (process {proc.pid} ended): {orphan}" in said
        assert "would remove 1 kernel socket folder(s)" in said and orphan.is_dir()

        assert main(["gc"]) == 0
        said = capsys.readouterr().out
        assert f"removed kernel socket folder {orphan.name}" in said and "removed 1 kernel socket folder(s)" in said
        assert not orphan.exists() and running.is_dir()  # the live run's folder is kept
    finally:
        proc.kill()
        for marker in (killed, live):
            marker.with_suffix(".go").touch()
        if killed.exists():  # the killed runner's kernel, by the pid it wrote
            try:
                os.kill(json.loads(killed.read_text())["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
        if thread is not None:
            thread.join(timeout=300)
    (result,) = results
    assert result.status == "FINISHED", result.error
    assert not running.exists()


def test_gc_knows_a_socket_folder_owner_by_pid_and_start_time(short_tmp, repo, monkeypatch, capsys):
    import psutil

    me = {"host": socket.gethostname(), "pid": os.getpid(), "create_time": psutil.Process().create_time()}
    folders = {}
    for name, owner in (("mine", me), ("reused", {**me, "create_time": me["create_time"] - 3600}),
                        ("unrecorded", None)):
        folders[name] = Path(tempfile.mkdtemp(prefix=f"cd4ml-kernel-{os.getpid()}-"))
        if owner is not None:
            (folders[name] / "owner.json").write_text(json.dumps(owner))
    folders["older-version"] = Path(tempfile.mkdtemp(prefix="cd4ml-kernel-"))  # names no owner
    monkeypatch.chdir(repo)
    assert main(["gc"]) == 0
    assert "removed 1 kernel socket folder(s)" in capsys.readouterr().out
    assert {name for name, folder in folders.items() if folder.exists()} == {"mine", "unrecorded", "older-version"}
