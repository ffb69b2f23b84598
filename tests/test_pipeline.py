"""Notebook pipelines (#23): prep -> train -> evaluate as tracked steps, re-running only what changed.

Real kernels, a real git repository and the real embedded MLflow store. Every notebook appends its
name to a marks file as it executes, so the kernels a run started are counted, not guessed. The
tests of the three-step pipeline share one repository and follow one another: each changes one
thing and checks what re-ran.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cd4ml_nb.cli import main

from nbfactory import commit_all, git, init_repo, percent, write_ipynb

MARK = "import os\nopen(os.environ['CD4ML_TEST_MARKS'], 'a').write({name!r} + '\\n')"

PREP = percent(MARK.format(name="prep"),
               "os.makedirs('data', exist_ok=True)\n"
               "open('data/clean.csv', 'w').write('x\\n' + ''.join(f'{i}\\n' for i in range(rows)))",
               parameters="rows: int = 5")
TRAIN = percent(MARK.format(name="train"),
                "n = len(open('data/clean.csv').read().split()) - 1\n"
                "open('model.pkl', 'w').write(f'depth={max_depth} n={n}')",
                parameters="max_depth: int = 3")
EVALUATE = percent(MARK.format(name="evaluate"),
                   "import mlflow\nmodel = open('model.pkl').read()\nmlflow.log_metric('score', len(model))\n"
                   "if fail:\n    raise ValueError('evaluation failed on purpose')",
                   parameters="fail: bool = False")
MEET = percent(  # steps a and b each wait for the other to have started: they pass only when run at once
    MARK.format(name="meet"),
    "import pathlib, time\nmarks = pathlib.Path(os.environ['CD4ML_TEST_MARKS']).parent\n"
    "(marks / f'started-{me}').touch()\ndeadline = time.monotonic() + 120\n"
    "while other and not (marks / f'started-{other}').exists():\n"
    "    assert time.monotonic() < deadline, f'{other} never started while {me} ran'\n    time.sleep(0.05)\n"
    "os.makedirs('out', exist_ok=True)\nopen(f'out/{me}.txt', 'w').write(me)\n"
    "if fail:\n    raise RuntimeError('broken on purpose')",
    parameters="me: str = 'x'\nother: str = ''\nfail: bool = False")

PIPELINE = """\
steps:
  prep:
    notebook: prep.ipynb          # either side of a pair
    parameters: {rows: 5}
    outputs: [data/clean.csv]
  train:
    notebook: train.ipynb
    needs: [prep]
    inputs: [data/clean.csv]
    parameters: {max_depth: 3}
    outputs: [model.pkl]
  evaluate:
    notebook: evaluate.ipynb
    needs: [train]
"""

MEETING = """\
steps:
  a: {notebook: meet.ipynb, parameters: {me: a, other: b}, outputs: [out/a.txt]}
  b: {notebook: meet.ipynb, parameters: {me: b, other: a}, outputs: [out/b.txt]}
  broken: {notebook: meet.ipynb, needs: [a], parameters: {me: broken, fail: true}}
  never: {notebook: meet.ipynb, needs: [broken], parameters: {me: never}}
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    base = tmp_path_factory.mktemp("pipeline")
    repo = init_repo(base / "repo", branch="master")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(repo)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("CD4ML_TEST_MARKS", str(base / "marks.txt"))
        for name, text in (("prep", PREP), ("train", TRAIN), ("evaluate", EVALUATE), ("meet", MEET)):
            write_ipynb(repo / f"{name}.ipynb", text)
            assert main(["pair", f"{name}.ipynb"]) == 0
        (repo / "cd4ml-pipeline.yaml").write_text(PIPELINE)
        (repo / "meeting.yaml").write_text(MEETING)
        (repo / ".gitignore").write_text("data/\nmodel.pkl\nout/\n")
        commit_all(repo)
        yield repo


@pytest.fixture
def marks(repo):
    """The kernels started since the test began, by notebook name."""
    path = Path(__import__("os").environ["CD4ML_TEST_MARKS"])
    before = path.read_text().split() if path.exists() else []
    return lambda: (path.read_text().split() if path.exists() else [])[len(before):]


def all_runs(repo: Path):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{repo / '.cd4ml' / 'mlflow.db'}")
    return c.search_runs([e.experiment_id for e in c.search_experiments()], max_results=1000)


def last_pipeline(repo: Path):
    """The newest pipeline run and its step runs by step name."""
    runs = all_runs(repo)
    parent = next(r for r in runs if r.data.tags.get("cd4ml.kind") == "pipeline")
    kids = {r.data.tags["cd4ml.step"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    return parent, kids


def run_json(capsys, *args: str) -> tuple[int, dict]:
    code = main(["pipeline", "run", "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def test_first_run_executes_every_step(repo, marks, capsys):
    assert main(["pipeline", "run"]) == 0
    out = capsys.readouterr().out.splitlines()
    # two lines per step: as it starts executing (a long step shows a sign of life) and as it ends
    assert [line.split(":")[0] for line in out[:6]] == ["prep", "prep", "train", "train", "evaluate", "evaluate"]
    assert all("executing (run " in line for line in out[:6:2]), out
    assert all("executed, FINISHED" in line for line in out[1:6:2]) and "pipeline FINISHED" in out[6]
    assert marks() == ["prep", "train", "evaluate"]
    parent, kids = last_pipeline(repo)
    assert parent.info.status == "FINISHED" and parent.info.experiment_id == kids["prep"].info.experiment_id
    for name, kid in kids.items():
        tags = kid.data.tags
        assert kid.info.status == "FINISHED" and tags["cd4ml.kind"] == "step" and "cd4ml.cache.hit" not in tags
        assert tags["mlflow.source.git.branch"] == "master" and tags["cd4ml.notebook"] == f"{name}.ipynb"
    assert kids["prep"].data.params["rows"] == "5" and kids["evaluate"].data.metrics["score"] == len("depth=3 n=5")
    assert json.loads(kids["prep"].data.tags["cd4ml.cache.outputs"]).keys() == {"data/clean.csv"}


def test_unchanged_run_starts_no_kernel(repo, marks, capsys):
    assert main(["pipeline", "status"]) == 0
    assert capsys.readouterr().out.count("up to date (run") == 3
    code, result = run_json(capsys)
    assert code == 0 and marks() == []
    first = {s["step"]: s for s in result["steps"]}
    assert all(s["cache_hit"] and s["status"] == "FINISHED" for s in first.values())
    parent, kids = last_pipeline(repo)
    assert parent.info.status == "FINISHED" and parent.data.tags["cd4ml.pipeline.cache_hits"] == "3"
    assert {n: k.data.tags["cd4ml.cache.hit"] for n, k in kids.items()} == {n: s["cache_hit"] for n, s in first.items()}
    assert kids["evaluate"].data.metrics["score"] == len("depth=3 n=5")  # copied from the run it stands for
    assert main(["pipeline", "status", "--json"]) == 0
    assert [s["up_to_date"] for s in json.loads(capsys.readouterr().out)["steps"]] == [True] * 3
    code, result = run_json(capsys, "train")  # a step and what it needs
    assert code == 0 and [s["step"] for s in result["steps"]] == ["prep", "train"] and marks() == []


def test_editing_train_reruns_train_and_evaluate(repo, marks, capsys):
    text = (repo / "train.py").read_text()
    (repo / "train.py").write_text(text.replace("f'depth={max_depth} n={n}'", "f'depth={max_depth} n={n} v2'"))
    assert main(["sync", "train.py"]) == 0
    capsys.readouterr()
    assert main(["pipeline", "status"]) == 0
    status = capsys.readouterr().out
    assert "train: would run: code of train.ipynb changed" in status and "prep: up to date" in status
    code, result = run_json(capsys)
    assert code == 0 and marks() == ["train", "evaluate"]
    assert [bool(s["cache_hit"]) for s in result["steps"]] == [True, False, False]


def test_deleting_an_output_reruns_its_step(repo, marks, capsys):
    (repo / "data" / "clean.csv").unlink()
    assert main(["pipeline", "status"]) == 0
    assert "prep: would run: output data/clean.csv is missing" in capsys.readouterr().out
    code, result = run_json(capsys)
    assert code == 0 and marks() == ["prep"]  # the same content again: train and evaluate stay cached
    assert [bool(s["cache_hit"]) for s in result["steps"]] == [False, True, True]
    code, result = run_json(capsys, "-p", "prep.rows", "7")  # new content: what reads it runs again
    assert code == 0 and marks() == ["prep", "prep", "train", "evaluate"]


def test_failing_evaluate_fails_the_pipeline(repo, marks, capsys):
    assert main(["pipeline", "run", "-p", "prep.rows", "7", "-p", "evaluate.fail", "true"]) == 1
    out = capsys.readouterr().out
    assert "evaluate: FAILED" in out and "pipeline FAILED" in out
    assert marks() == ["evaluate"]
    parent, kids = last_pipeline(repo)
    assert parent.info.status == "FAILED"
    assert [kids[n].info.status for n in ("prep", "train", "evaluate")] == ["FINISHED", "FINISHED", "FAILED"]
    assert kids["evaluate"].data.tags["cd4ml.failed_cell.ename"] == "ValueError"


def test_independent_steps_run_at_once_and_dependants_of_a_failure_are_skipped(repo, marks, capsys):
    code, result = run_json(capsys, "-f", "meeting.yaml", "--parallel", "2")
    assert code == 1
    steps = {s["step"]: s["status"] for s in result["steps"]}
    assert steps == {"a": "FINISHED", "b": "FINISHED", "broken": "FAILED", "never": "SKIPPED"}
    assert marks() == ["meet"] * 3  # a and b met each other; never did not start
    parent, kids = last_pipeline(repo)
    assert parent.info.status == "FAILED" and kids["never"].data.tags["cd4ml.status.reason"] == "skipped"


BAD = {
    "unknown key": ("steps:\n  prep: {notebook: prep.ipynb, output: [x]}\n", "step 'prep': unknown key(s) ['output']"),
    "cycle": ("steps:\n  prep: {notebook: prep.ipynb, needs: [train]}\n  train: {notebook: train.ipynb, needs: [prep]}\n",
              "cycle prep -> train -> prep"),
    "missing notebook": ("steps:\n  prep: {notebook: nope.ipynb}\n", "step 'prep': notebook nope.ipynb does not exist"),
    "unknown need": ("steps:\n  prep: {notebook: prep.ipynb, needs: [clean]}\n", "step 'prep': needs 'clean', which is no step"),
    "output twice": ("steps:\n  prep: {notebook: prep.ipynb, outputs: [a.csv]}\n"
                     "  train: {notebook: train.ipynb, outputs: [a.csv]}\n",
                     "step 'train': output a.csv is also claimed by step 'prep'"),
    "undeclared parameter": ("steps:\n  prep: {notebook: prep.ipynb, parameters: {colour: red}}\n",
                             "step 'prep': prep.ipynb: unknown parameter 'colour'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_pipeline_exits_2_in_one_line_before_any_kernel(repo, marks, capsys, case):
    text, problem = BAD[case]
    (repo / "bad.yaml").write_text(text)
    count = len(all_runs(repo))
    assert main(["pipeline", "run", "-f", "bad.yaml"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cd4ml-nb: error: bad.yaml: ") and problem in err[0], err
    assert marks() == [] and len(all_runs(repo)) == count


def test_a_parameter_of_no_step_is_refused(repo, marks, capsys):
    assert main(["pipeline", "run", "-p", "nostep.rows", "3"]) == 2
    assert "cd4ml-pipeline.yaml: -p nostep.rows: no step 'nostep'" in capsys.readouterr().err
    assert main(["pipeline", "run", "-p", "prep.rows", "many"]) == 2
    assert "step 'prep': prep.ipynb: rows='many' does not fit int" in capsys.readouterr().err
    assert marks() == []


def test_copied_metrics_are_the_rows_mlflow_writes(repo):
    import sqlite3

    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from cd4ml_nb.sqlite_client import open_client

    path = repo / ".cd4ml" / "mlflow.db"
    light = open_client(path, f"sqlite:///{path}")
    if light is None:
        pytest.skip("the light client is not verified for the installed MLflow")
    c = MlflowClient(f"sqlite:///{path}")
    experiment = c.create_experiment("copied-metrics")
    by_mlflow, copied = (c.create_run(experiment).info.run_id for _ in range(2))
    metrics = {"score": 0.25, "nan": float("nan"), "huge": float("inf"), "low": float("-inf")}
    c.log_batch(by_mlflow, metrics=[Metric(k, v, 1234, 0) for k, v in metrics.items()])
    light.copy_metrics(copied, metrics, 1234)
    db = sqlite3.connect(path)

    def rows(table: str, run_id: str):
        return sorted(db.execute(f"SELECT key, value, timestamp, step, is_nan FROM {table} WHERE run_uuid = ?",
                                 (run_id,)).fetchall())

    for table in ("metrics", "latest_metrics"):
        assert rows(table, copied) == rows(table, by_mlflow) != []


def test_gate_compare_report_and_test_read_a_step_and_ci_runs_the_pipeline(repo, marks, capsys):
    """On a branch, --step (the last step by default) compares the step's runs with the base
    branch's; plain gate still compares runs of kind run; ci runs the pipeline and gates its last step."""
    git(repo, "checkout", "-q", "-b", "deeper")
    try:
        commit_all(repo, "train v2")
        # master's latest FINISHED evaluate scored len('depth=3 n=7 v2') = 14
        assert main(["pipeline", "run", "-p", "prep.rows", "7", "-p", "train.max_depth", "10"]) == 0
        assert marks() == ["train", "evaluate"]  # prep is the base branch's cache hit
        capsys.readouterr()
        assert main(["compare", "--step", "--json"]) == 0
        comparison = json.loads(capsys.readouterr().out)
        assert comparison["step"] == "evaluate" and comparison["kind"] == "step"
        [nb] = comparison["notebooks"]
        assert nb["notebook"] == "evaluate.ipynb"
        assert (nb["base"]["metrics"]["score"], nb["branch"]["metrics"]["score"]) == (14, len("depth=10 n=7 v2"))
        assert main(["gate", "--step", "--metric", "score", "--goal", "minimize"]) == 1
        assert "FAIL evaluate.ipynb score (minimize): base 14 -> branch 15" in capsys.readouterr().out
        assert main(["gate", "--step", "evaluate", "--metric", "score", "--goal", "maximize"]) == 0
        capsys.readouterr()
        assert main(["gate", "--metric", "score"]) == 2  # plain runs: neither branch has one
        assert main(["gate", "--step", "nosuch", "--metric", "score"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1] == ("cd4ml-nb: error: cd4ml-pipeline.yaml: no step 'nosuch' (steps: prep, train, evaluate)")
        assert main(["report", "--step", "--metric", "score", "--goal", "maximize"]) == 0
        assert "Runs compared (latest, pipeline step `evaluate`)" in capsys.readouterr().out
        assert main(["test", "--step", "--update", "-q"]) == 0 and marks() == ["train", "evaluate", "evaluate"]
        assert main(["test", "--step", "evaluate", "-q"]) == 0  # the step's parameters, its baseline
        capsys.readouterr()

        (repo / "cd4ml-pipeline.yaml").write_text(PIPELINE.replace("{rows: 5}", "{rows: 7}")
                                                  .replace("{max_depth: 3}", "{max_depth: 10}"))
        (repo / "pyproject.toml").write_text('[tool.cd4ml_nb]\nci_gate = [{metric = "score", goal = "minimize"}]\n')
        commit_all(repo, "deeper trees")
        before = len(marks())
        assert main(["ci"]) == 6
        out = capsys.readouterr().out
        assert "== ci: pipeline (cd4ml-pipeline.yaml) ==" in out and "evaluate: cache hit" in out
        assert "FAIL evaluate.ipynb score (minimize): base 14 -> branch 15" in out and "ci FAILED at the gate" in out
        assert len(marks()) == before  # all three steps were cache hits: no kernel
    finally:
        git(repo, "checkout", "-q", "-f", "master")


@pytest.fixture
def dask_worker(repo):
    """A Dask scheduler and one worker process, started in the repository."""
    import os
    import signal
    import subprocess
    import sys

    from nbfactory import free_port

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                               "--port", str(port), "--no-dashboard"], cwd=repo, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "2",
                                   "--nworkers", "1", "--no-dashboard"], cwd=repo, env=env, start_new_session=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    from distributed import Client

    with Client(address, timeout=60) as client:
        client.wait_for_workers(1, timeout=60)
        worker_pids = set(client.run(os.getpid).values())
    yield address, worker_pids
    for proc in procs:
        os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_steps_run_on_a_dask_cluster(repo, marks, capsys, dask_worker):
    address, worker_pids = dask_worker
    code, result = run_json(capsys, "--dask", address, "--force")
    assert code == 0 and [s["status"] for s in result["steps"]] == ["FINISHED"] * 3
    assert sorted(marks()) == ["evaluate", "prep", "train"]
    parent, kids = last_pipeline(repo)
    assert parent.info.run_id == result["parent_run_id"] and parent.info.status == "FINISHED"
    runners = {kid.data.tags["cd4ml.runner"].rsplit(":", 1)[1] for kid in kids.values()}
    assert runners <= {str(pid) for pid in worker_pids}, runners  # executed by the worker, not this process
    assert kids["evaluate"].data.metrics["score"] == len("depth=3 n=5")
