"""Papermill's door: papermill's own test notebooks (from the installed papermill) through bare
`papermill`, `papermill --engine cd4ml` and `cd4ml-nb run NB OUT`, compared cell by cell; the engine
door records runs; `run` takes papermill's options with papermill's meanings. Real kernels, git, MLflow."""
from __future__ import annotations

import base64
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nbfactory import commit_all, init_repo, percent, wait_until, write_ipynb


def corpus() -> Path:
    import papermill

    return Path(papermill.__file__).parent / "tests" / "notebooks"


NOTEBOOKS = ("simple_execute.ipynb", "broken1.ipynb", "line_magic_error.ipynb", "sysexit0.ipynb", "sysexit1.ipynb",
             "nb_version_4.4.ipynb", "report_mode_test.ipynb", "no_parameters.ipynb")


@pytest.fixture
def fresh_repo(tmp_path, monkeypatch):
    """The corpus committed, no store yet: the door's first run builds it."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    repo = init_repo(tmp_path / "repo")
    for name in NOTEBOOKS:
        shutil.copy(corpus() / name, repo / name)
    commit_all(repo)
    return repo


@pytest.fixture
def repo(fresh_repo, seed_store):
    """``fresh_repo`` with the store a first run builds (building it costs seconds); the engine door's
    record test and the Python API test start from no store."""
    seed_store(fresh_repo)
    return fresh_repo


def run(repo: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=repo, capture_output=True, text=True, timeout=timeout)


def bare(repo: Path, nb: str, out: str, *args: str) -> subprocess.CompletedProcess:
    return run(repo, "-m", "papermill", nb, out, "--no-progress-bar", *args)


def engine(repo: Path, nb: str, out: str, *args: str) -> subprocess.CompletedProcess:
    return run(repo, "-m", "papermill", nb, out, "--no-progress-bar", "--engine", "cd4ml", *args)


def cd4ml_run(repo: Path, nb: str, out: str, *args: str) -> subprocess.CompletedProcess:
    return run(repo, "-m", "cd4ml_nb.cli", "run", nb, out, "--no-progress-bar", "--no-html", *args)


def runs(repo: Path):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{repo / '.cd4ml' / 'mlflow.db'}")
    return c.search_runs([e.experiment_id for e in c.search_experiments()], order_by=["attributes.start_time ASC"])


def _output(o: dict) -> dict:
    keep = ("output_type", "name", "text", "ename", "evalue", "traceback", "data", "execution_count")
    return {k: o[k] for k in keep if k in o}


def cells(path: Path) -> list[dict]:
    """What a reader of the executed notebook sees, cell by cell (timings and ids left out)."""
    nb = json.loads(path.read_text())
    return [{"cell_type": c["cell_type"], "source": "".join(c["source"]), "execution_count": c.get("execution_count"),
             "outputs": [_output(o) for o in c.get("outputs", [])], "tags": c["metadata"].get("tags", []),
             "jupyter": c["metadata"].get("jupyter"), "exception": c["metadata"].get("papermill", {}).get("exception")}
            for c in nb["cells"]]


def papermill_metadata(path: Path) -> dict:
    return json.loads(path.read_text())["metadata"]["papermill"]


# (notebook, papermill's arguments as papermill's own tests give them, whether `run` refuses them)
CASES = [
    ("simple_execute.ipynb", ["-p", "msg", '"Hello"'], False),  # test_quoted_params: the quotes stay
    ("simple_execute.ipynb", ["-p", "msg", "[1,2]"], False),  # a None default: the text, not a list
    ("broken1.ipynb", [], False),
    ("line_magic_error.ipynb", [], False),
    ("sysexit0.ipynb", [], False),
    ("sysexit1.ipynb", [], False),
    ("report_mode_test.ipynb", ["-p", "a", "0", "--report-mode"], False),
    ("nb_version_4.4.ipynb", ["-p", "var", "It works"], True),  # a default of 1: `run` refuses the text
    ("no_parameters.ipynb", ["-p", "msg", "Hello"], True),  # no parameters cell: papermill warns, `run` refuses
]


BARE_SCRIPT = """
import json, sys, traceback
from papermill.cli import papermill
codes = []
for name, out, args in json.loads(sys.argv[1]):
    try:
        papermill.main([name, out, "--no-progress-bar", *args], prog_name="papermill")
        code = 0
    except SystemExit as e:
        code = 0 if e.code is None else e.code
    except Exception:  # what `python -m papermill` does with it: a traceback and exit status 1
        traceback.print_exc()
        code = 1
    codes.append(code)
print(json.dumps(codes))
"""


@pytest.fixture(scope="module")
def bare_outputs(tmp_path_factory) -> dict[tuple, tuple[int, Path]]:
    """Every case through bare papermill's own command (its click command, as `python -m papermill`
    calls it), once per module and in one process: (exit status, executed notebook) by case."""
    where = tmp_path_factory.mktemp("bare")
    for name in NOTEBOOKS:
        shutil.copy(corpus() / name, where / name)
    cases = [(name, f"bare-{i}.ipynb", args) for i, (name, args, _) in enumerate(CASES)]
    done = subprocess.run([sys.executable, "-c", BARE_SCRIPT, json.dumps(cases)], cwd=where, capture_output=True,
                          text=True, timeout=1200)
    assert done.returncode == 0, done.stderr
    codes = json.loads(done.stdout.splitlines()[-1])
    return {(name, tuple(args)): (code, where / out) for (name, out, args), code in zip(cases, codes)}


def check_failed_cell_tags(repo: Path) -> None:
    """line_magic_error.ipynb failed through the engine and through `run`: both runs name the cell."""
    recorded = runs(repo)
    assert len(recorded) == 2
    for run_ in recorded:
        tags = run_.data.tags
        assert run_.info.status == "FAILED" and tags["cd4ml.failed_cell"] == "0"
        assert tags["cd4ml.failed_cell.ename"] == "UsageError"  # papermill's own error says CellExecutionError
        assert "undefined-line-magic" in tags["cd4ml.failed_cell.evalue"]
    engine_runs = [r for r in recorded if r.data.tags.get("cd4ml.door") == "papermill"]
    source = json.loads((repo / "line_magic_error.ipynb").read_text())["cells"]
    assert "undefined-line-magic" in "".join(source[int(engine_runs[0].data.tags["cd4ml.failed_cell"])]["source"])


def check_cell_exception_report(failed: subprocess.CompletedProcess) -> None:
    """`run` of broken1.ipynb reports the failed cell with papermill's banner, without colours
    (the quiet run's report is checked in test_papermill_compat)."""
    lines = failed.stdout.splitlines()
    reason = next(i for i, line in enumerate(lines) if line.startswith("reason: cell-exception: cell index 6"))
    trace = "\n".join(lines[reason + 1:])
    assert 'Exception encountered at "In [2]"' in trace and "----> 1 assert False" in trace  # papermill's banner
    assert "\x1b[" not in failed.stdout  # not a terminal: no ANSI colours


@pytest.mark.parametrize("name,args,refused", CASES, ids=[f"{c[0]}{c[1][2:3]}" for c in CASES])
def test_both_doors_write_papermills_notebook_cell_for_cell(repo, bare_outputs, name, args, refused):
    """Also: a failed cell is recorded as its own exception through either door (line_magic_error),
    and `run` reports a cell exception with papermill's banner (broken1)."""
    pm_returncode, pm_out = bare_outputs[(name, tuple(args))]
    shutil.copy(pm_out, repo / "bare.ipynb")
    assert pm_returncode in (0, 1)
    door = engine(repo, name, "engine.ipynb", *args)
    assert door.returncode == pm_returncode, door.stderr
    expected = cells(repo / "bare.ipynb")
    assert cells(repo / "engine.ipynb") == expected
    timing = ("start_time", "end_time", "duration", "output_path")
    assert ({k: v for k, v in papermill_metadata(repo / "engine.ipynb").items() if k not in timing}
            == {k: v for k, v in papermill_metadata(repo / "bare.ipynb").items() if k not in timing})
    (recorded,) = runs(repo)
    assert recorded.data.tags["cd4ml.door"] == "papermill"
    assert recorded.info.status == ("FINISHED" if pm_returncode == 0 else "FAILED")

    ran = cd4ml_run(repo, name, "run.ipynb", *args)
    if refused:
        assert ran.returncode == 2 and ran.stderr.count("\n") == 1, ran.stderr
        assert len(runs(repo)) == 1  # refused before any kernel or run
        return
    assert ran.returncode == pm_returncode, ran.stdout + ran.stderr
    assert cells(repo / "run.ipynb") == expected
    meta = papermill_metadata(repo / "run.ipynb")
    assert meta.keys() == papermill_metadata(repo / "bare.ipynb").keys()
    assert meta["input_path"] == name and meta["output_path"] == "run.ipynb"  # paths, not the notebook itself
    assert meta["parameters"] == papermill_metadata(repo / "bare.ipynb")["parameters"]
    assert len(runs(repo)) == 2
    if name == "line_magic_error.ipynb":
        assert door.returncode == ran.returncode == 1
        check_failed_cell_tags(repo)
    if name == "broken1.ipynb":
        assert ran.returncode == 1
        check_cell_exception_report(ran)


def test_the_engine_door_records_the_run_like_cd4ml_run(fresh_repo):
    repo = fresh_repo
    write_ipynb(repo / "score.ipynb", percent("import mlflow\nmlflow.log_metric('score', alpha * 2)",
                                              parameters="alpha = 0.5"))
    commit_all(repo)
    done = engine(repo, "score.ipynb", "out.ipynb", "-p", "alpha", "0.25")
    assert done.returncode == 0, done.stderr
    (recorded,) = runs(repo)
    tags = recorded.data.tags
    assert tags["mlflow.source.git.branch"] == "master" and tags["mlflow.source.name"] == "score.ipynb"
    assert tags["cd4ml.kind"] == "run" and "mlflow.source.git.commit" in tags
    assert recorded.data.params == {"alpha": "0.25"} and recorded.data.metrics == {"score": 0.5}
    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{repo / '.cd4ml' / 'mlflow.db'}")
    artifacts = {a.path for a in c.list_artifacts(recorded.info.run_id)}
    assert {"score.ipynb", "score.source.py"} <= artifacts
    executed = Path(c.download_artifacts(recorded.info.run_id, "score.ipynb"))
    assert cells(executed) == cells(repo / "out.ipynb")  # the artifact is papermill's notebook


def test_the_python_api_with_engine_name_cd4ml_records_a_run(fresh_repo, monkeypatch):
    repo = fresh_repo
    code = ("import papermill\n"
            "papermill.execute_notebook('simple_execute.ipynb', 'api.ipynb', parameters={'msg': 'hi'},"
            " engine_name='cd4ml', progress_bar=False)\n")
    done = run(repo, "-c", code)
    assert done.returncode == 0, done.stderr
    (recorded,) = runs(repo)
    assert recorded.info.status == "FINISHED" and recorded.data.params["msg"] == "hi"


def test_an_interrupted_papermill_run_ends_killed(repo, tmp_path):
    flag = tmp_path / "started"
    write_ipynb(repo / "slow.ipynb", percent(f"import pathlib, time\npathlib.Path({str(flag)!r}).touch()\n"
                                             "time.sleep(600)"))
    commit_all(repo)
    proc = subprocess.Popen([sys.executable, "-m", "papermill", "slow.ipynb", "out.ipynb", "--engine", "cd4ml",
                             "--no-progress-bar"], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(flag.exists, 300, "the cell started")
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    (recorded,) = runs(repo)
    assert recorded.info.status == "KILLED"


def test_the_parameters_cell_stays_where_it_is_with_the_injected_cell_after_it(repo):
    write_ipynb(repo / "third.ipynb", "# %%\na = 1\n\n# %%\nb = 2\n\n# %%\nc = 3\n\n"
                                      '# %% tags=["parameters"]\nn = 1\n\n# %%\nprint(n)\n')
    commit_all(repo)
    assert json.loads((repo / "third.ipynb").read_text())["cells"][3]["metadata"]["tags"] == ["parameters"]
    done = cd4ml_run(repo, "third.ipynb", "out.ipynb", "-p", "n", "5")
    assert done.returncode == 0, done.stderr
    executed = cells(repo / "out.ipynb")
    assert executed[3]["tags"] == ["parameters"] and executed[4]["tags"] == ["injected-parameters"]
    assert [c["execution_count"] for c in executed] == [1, 2, 3, 4, 5, 6]
    assert "".join(executed[5]["outputs"][0]["text"]) == "5\n"


OPTIONS = percent(
    "import os\nprint(os.getcwd())\nprint(PAPERMILL_INPUT_PATH, PAPERMILL_OUTPUT_PATH)\n"
    "print(repr(raw), repr(y), repr(b), repr(f))",
    parameters="raw = 'x'\ny = 0\nb = 0\nf = 0",
)


def test_run_takes_papermills_options_with_papermills_meanings(repo, tmp_path):
    write_ipynb(repo / "options.ipynb", OPTIONS)
    (repo / "values.yaml").write_text("f: 4\n")
    commit_all(repo)
    (tmp_path / "elsewhere").mkdir()
    args = ["-r", "raw", "7", "-y", "y: 2", "-b", base64.b64encode(b"b: 3").decode(), "-f", "values.yaml",
            "-k", "python3", "--cwd", str(tmp_path / "elsewhere"), "--log-output", "--stdout-file", "out.txt",
            "--stderr-file", "err.txt", "--report-mode", "--execution-timeout", "120", "--start-timeout", "120",
            "--inject-paths", "--autosave-cell-every", "5"]
    done = cd4ml_run(repo, "options.ipynb", "out.ipynb", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    printed = (repo / "out.txt").read_text()
    assert str(tmp_path / "elsewhere") in printed  # --cwd: the kernel's working directory
    assert "options.ipynb out.ipynb" in printed  # --inject-paths
    assert "'7' 2 3 4" in printed  # -r stays text; -y, -b, -f typed
    executed = cells(repo / "out.ipynb")
    assert all(c["jupyter"] == {"source_hidden": True} for c in executed)  # --report-mode
    (recorded,) = runs(repo)
    assert recorded.data.params["raw"] == "7" and recorded.info.status == "FINISHED"
    assert Path(recorded.data.tags["cd4ml.output_dir"], "options.ipynb").is_file()  # the run's own copy stays

    prepared = cd4ml_run(repo, "options.ipynb", "prepared.ipynb", "--prepare-only", "-p", "y", "9", "--inject-paths")
    assert prepared.returncode == 0, prepared.stderr
    nb = cells(repo / "prepared.ipynb")
    assert "y = 9" in nb[1]["source"] and all(c["execution_count"] is None for c in nb)
    assert papermill_metadata(repo / "prepared.ipynb")["input_path"] == "options.ipynb"
    assert len(runs(repo)) == 1  # prepared, not run


def test_run_reads_p_as_papermill_then_keeps_its_typed_check(repo):
    write_ipynb(repo / "typed.ipynb", percent("print(repr(n), repr(x), repr(s), repr(v))",
                                              parameters="n = 1\nx = 0.5\ns = 'a'\nv = None"))
    commit_all(repo)
    done = cd4ml_run(repo, "typed.ipynb", "out.ipynb", "-p", "n", "3", "-p", "x", "1", "-p", "s", '"q"',
                     "-p", "v", "[1,2]", "--stdout-file", "printed.txt")
    assert done.returncode == 0, done.stderr
    assert (repo / "printed.txt").read_text().strip() == "3 1.0 '\"q\"' '[1,2]'"
    refused = cd4ml_run(repo, "typed.ipynb", "out.ipynb", "-p", "n", "It works")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "typed.ipynb" in refused.stderr
