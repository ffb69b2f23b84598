"""The papermill engine cd4ml-nb registers once: kernels get their folder without the process
changing directory, MLflow loads in the kernel only when the notebook uses it, and runs sharing
a process (sweep trials, Lab jobs) do not disturb one another. Real kernels, real stores."""
from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from cd4ml_nb.runner import run_notebook

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
        results[folder] = run_notebook(repo / folder / "waits.ipynb", progress=False, html=False)

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


def test_the_kernel_loads_mlflow_only_when_the_notebook_does(repo):
    plain = run_notebook(repo / "plain.ipynb", progress=False, html=False)
    assert plain.status == "FINISHED", plain.error
    assert _outputs(plain.executed) == ["False\n"]

    later = run_notebook(repo / "later.ipynb", progress=False, html=False)
    assert later.status == "FINISHED", later.error
    first, attached = _outputs(later.executed)
    assert first == "False\n"
    assert attached.strip() == later.run_id  # imported late, mlflow still logs to this execution's run
    assert later.metrics == {"m": 1.5}


TRANSPORT = percent(
    "import json\nfrom ipykernel.connect import get_connection_info\n"
    "info = get_connection_info(unpack=True)\nprint(json.dumps([info['transport'], info['ip']]))",
)


def test_ipykernel_talks_over_private_unix_sockets_other_kernels_over_tcp(repo, tmp_path, monkeypatch, capfd):
    """TCP ports are picked by binding and releasing them, so concurrent runs could pick the same
    one; an ipykernel kernel gets Unix sockets in a private folder, removed after the run."""
    import nbformat

    share = tmp_path / "share" / "jupyter"
    spec = share / "kernels" / "wrapped"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({  # ipykernel, but not recognisably: stays on TCP
        "argv": [sys.executable, "-c", "from ipykernel.kernelapp import launch_new_instance as go; go()",
                 "-f", "{connection_file}"],
        "display_name": "wrapped", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(share))
    for name in ("python3", "wrapped"):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(TRANSPORT.split("# %%\n")[-1])])
        nb.metadata["kernelspec"] = {"name": name, "display_name": name, "language": "python"}
        nbformat.write(nb, repo / f"{name}.ipynb")
    commit_all(repo, "transport notebooks")

    ipc = run_notebook(repo / "python3.ipynb", progress=False, html=False)
    assert ipc.status == "FINISHED", ipc.error
    transport, ip = json.loads(_outputs(ipc.executed)[0])
    assert transport == "ipc" and Path(ip).parent.name.startswith("cd4ml-kernel-")
    assert Path(ip).parent.parent == Path(tempfile.gettempdir()) and not Path(ip).parent.exists()
    assert "without encryption" not in capfd.readouterr().err  # ipykernel 7's warning for TCP

    tcp = run_notebook(repo / "wrapped.ipynb", progress=False, html=False)
    assert tcp.status == "FINISHED", tcp.error
    assert json.loads(_outputs(tcp.executed)[0]) == ["tcp", "127.0.0.1"]

    # a temporary folder too deep for a socket's path (sun_path): TCP, and nothing left behind
    deep = tmp_path / ("d" * 90)
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    fallback = run_notebook(repo / "python3.ipynb", progress=False, html=False)
    assert fallback.status == "FINISHED", fallback.error
    assert json.loads(_outputs(fallback.executed)[0])[0] == "tcp" and not any(deep.iterdir())
