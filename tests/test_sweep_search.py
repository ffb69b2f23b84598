"""Sweeps that search (issue #25): Optuna samplers, pruning from logged curves, resumable studies.

Real kernels, a real SQLite store, real Optuna storage. The sampler comparison (5 seeds x 20 trials
per method) runs twice: in the main suite through the sweep's own ask/tell with the objective
computed in-process (half a minute), and with 200 real kernels in test_tpe_beats_random_search_with_real_kernels,
marked ``long`` (10-20 min here): deselected by default, run by .ci/run as a step of its own.
"""
from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from cd4ml_nb.cli import main
from cd4ml_nb.tracking import summarize

from test_sweep import cluster  # noqa: F401  (a real mlflow server, a Dask scheduler and two workers)

from nbfactory import commit_all, end_processes, init_repo, percent, wait_until, write_ipynb

QUADRATIC = percent(  # a shifted quadratic in two dimensions; the optimum (3.3, -1.7) is 0
    "import mlflow\nmlflow.log_metric('loss', (x - 3.3) ** 2 + (y + 1.7) ** 2)",
    parameters="x: float = 0.0\ny: float = 0.0",
)
CURVE = percent(  # a training curve whose level is set by x from its first step: bad trials show early
    "import os, pathlib, time, mlflow\n"
    "for step in range(8):\n"
    "    mlflow.log_metric('loss', x + 1.0 / (step + 1), step=step)\n"
    "    if os.environ.get('TRIAL_MARKERS') and step == 0:\n"
    "        pathlib.Path(os.environ['TRIAL_MARKERS'], str(x)).touch()\n"
    "    time.sleep(pause)",
    parameters="x: float = 0.0\npause: float = 0.5",
)


def sweep_file(repo: Path, method: str, n: int, seed: int, space: str, prune: str = "none",
               extra: str = "") -> Path:
    path = repo / f"sweep-{method}-{seed}.yaml"
    path.write_text(f"search:\n  method: {method}\n  n: {n}\n  seed: {seed}\n  space: {space}\n  prune: {prune}\n"
                    f"metric: loss\ngoal: minimize\n{extra}")
    return path


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    repo = init_repo(tmp_path / "study", branch="tune")
    write_ipynb(repo / "quad.ipynb", QUADRATIC)
    write_ipynb(repo / "curve.ipynb", CURVE)
    commit_all(repo)
    monkeypatch.chdir(repo)
    return repo


def store(repo: Path) -> str:
    return f"sqlite:///{repo / '.cd4ml' / 'mlflow.db'}"


def all_runs(uri: str):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    return c.search_runs([e.experiment_id for e in c.search_experiments()], max_results=5000)


def studies(runs) -> dict[str, tuple]:
    """Parent run -> (parent, its trial runs)."""
    parents = {r.info.run_id: r for r in runs if r.data.tags.get("cd4ml.kind") == "sweep"}
    return {pid: (p, [r for r in runs if r.data.tags.get("mlflow.parentRunId") == pid]) for pid, p in parents.items()}


def test_a_space_naming_an_undeclared_parameter_exits_2_before_any_kernel(repo, capsys):
    bad = sweep_file(repo, "tpe", 4, 0, "{x: {uniform: [-10, 10]}, depth: {randint: [2, 12]}}")
    assert main(["sweep", "quad.ipynb", "-f", str(bad), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "depth" in err[0] and bad.name in err[0] and "x, y" in err[0], err
    wrong = sweep_file(repo, "random", 4, 1, "{x: {choice: [a, b]}}")
    assert main(["sweep", "quad.ipynb", "-f", str(wrong), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'x'" in err[0] and "choice" in err[0], err
    assert main(["sweep", "quad.ipynb", "-f", str(sweep_file(repo, "annealing", 4, 2, "{x: {uniform: [0, 1]}}")),
                 "-q"]) == 2
    assert not (repo / ".cd4ml" / "mlflow.db").exists()  # nothing ran, no run store was even created
    assert not list((repo / ".cd4ml").glob("runs/*")) if (repo / ".cd4ml").exists() else True


def quadratic(values: dict) -> float:
    return (values["x"] - 3.3) ** 2 + (values["y"] + 1.7) ** 2


def best_in_process(repo: Path, method: str, seed: int) -> float:
    """The study's own ask/tell (study.StudySource, as a sweep drives it), the quadratic told in-process."""
    from cd4ml_nb import params, study
    from cd4ml_nb.project import Project
    from cd4ml_nb.sweep import TrialResult

    path = sweep_file(repo, method, 20, seed, "{x: {uniform: [-10, 10]}, y: {uniform: [-10, 10]}}")
    contract = params.Contract((params.Parameter("x", "float", 0.0), params.Parameter("y", "float", 0.0)), 0)
    search = study.parse(params.load_values_file(path), contract, path.name)
    source = study.StudySource(Project.discover(repo), search, study.Scope("quad.ipynb", "tune", {}, path.name))
    best, running = float("inf"), []
    while True:  # two trials in flight, ended first in first out, as `--parallel 2` keeps them
        while len(running) < 2 and (trial := source.take()) is not None:
            running.append(trial)
        if not running:
            break
        trial = running.pop(0)
        loss = quadratic(trial.values)
        source.ended(TrialResult(trial, "", "FINISHED", {"loss": loss}))
        best = min(best, loss)
    source.close(False, {})
    return best


def test_tpe_beats_random_search_on_a_shifted_quadratic(repo):
    """Median best over 5 seeds x 20 trials, both methods, the same budget. The comparison drives the
    very ask/tell a sweep uses with the objective computed in-process: 200 kernels cost ~18 min on this
    machine (5.5 s a trial at --parallel 2), so kernels run once below, for what they add (the values
    reach the notebook, its logged metric is what the study is told, the parent records the best)."""
    seeds = range(5)
    tpe = [best_in_process(repo, "tpe", s) for s in seeds]
    rnd = [best_in_process(repo, "random", s) for s in seeds]
    # deterministic (seeded samplers, trials ended in order): measured 1.17 against 4.25 (3.6x), TPE
    # ahead for every seed; with Optuna 5's default constant_liar TPE's median was 4.06 (this fails)
    print(f"in-process, two in flight: tpe {statistics.median(tpe):.3f} {tpe}, random {statistics.median(rnd):.3f} {rnd}")
    assert statistics.median(tpe) * 2 < statistics.median(rnd), (tpe, rnd)
    assert all(t < r for t, r in zip(tpe, rnd)), (tpe, rnd)
    cmaes = [best_in_process(repo, "cmaes", s) for s in range(3)]  # the third sampler runs the same way
    assert statistics.median(cmaes) < statistics.median(rnd), cmaes

    path = sweep_file(repo, "tpe", 10, 7, "{x: {uniform: [-10, 10]}, y: {uniform: [-10, 10]}}")
    assert main(["sweep", "quad.ipynb", "-f", str(path), "--parallel", "2", "-q"]) == 0
    (parent, kids), = studies(all_runs(store(repo))).values()
    assert sorted(int(k.data.tags["cd4ml.trial"]) for k in kids) == list(range(10))
    assert sorted(summarize(k).trial for k in kids) == list(range(10))  # the dashboard's trial chart reads it
    for k in kids:
        assert k.data.tags["cd4ml.kind"] == "trial" and k.data.tags["cd4ml.trial.state"] == "complete"
        values = {"x": float(k.data.params["x"]), "y": float(k.data.params["y"])}
        assert k.data.metrics["loss"] == pytest.approx(quadratic(values))
    best = min(kids, key=lambda k: k.data.metrics["loss"])
    assert parent.data.metrics["best_loss"] == best.data.metrics["loss"]
    assert parent.data.tags["cd4ml.study.best_trial"] == best.data.tags["cd4ml.trial"]
    assert parent.data.tags["cd4ml.study"].startswith("quad.ipynb@tune@")
    import optuna

    told = optuna.load_study(study_name=parent.data.tags["cd4ml.study"],
                             storage=f"sqlite:///{repo / '.cd4ml' / 'optuna.db'}")
    assert told.best_value == best.data.metrics["loss"] and len(told.trials) == 10


@pytest.mark.long
@pytest.mark.timeout(1800)
def test_tpe_beats_random_search_with_real_kernels(repo):
    """The same comparison as above, each trial a kernel running the notebook: 5 seeds x 20 trials per
    method, one trial at a time, so both seeded samplers are deterministic and the margin is what the
    samplers make of the budget. With two trials in flight TPE's result depends on which ends first:
    real kernels gave a median of 2.20 against 4.25; over 400 simulated completion orders TPE's median
    exceeded random's once and half of it 50 times (a margin too thin to assert on)."""
    space = "{x: {uniform: [-10, 10]}, y: {uniform: [-10, 10]}}"
    best: dict[str, list[float]] = {"tpe": [], "random": []}
    for method in best:
        for seed in range(5):
            path = sweep_file(repo, method, 20, seed, space)
            assert main(["sweep", "quad.ipynb", "-f", str(path), "--parallel", "1", "-q"]) == 0
    for parent, kids in studies(all_runs(store(repo))).values():
        assert len(kids) == 20 and all(k.info.status == "FINISHED" for k in kids)
        losses = [k.data.metrics["loss"] for k in kids]
        assert all(v == pytest.approx(quadratic({"x": float(k.data.params["x"]), "y": float(k.data.params["y"])}))
                   for v, k in zip(losses, kids))  # what the study was told is what each kernel computed
        assert parent.data.metrics["best_loss"] == min(losses)
        best[parent.data.tags["cd4ml.study.method"]].append(min(losses))
    print(f"median best over 5 seeds x 20 trials: tpe {statistics.median(best['tpe']):.3f} {best['tpe']}, "
          f"random {statistics.median(best['random']):.3f} {best['random']}")
    assert len(best["tpe"]) == len(best["random"]) == 5
    # measured: tpe 1.17 [0.12, 1.76, 0.98, 1.17, 1.98], random 4.25 [1.89, 7.55, 2.10, 4.25, 8.20] (3.6x)
    assert statistics.median(best["tpe"]) * 2 < statistics.median(best["random"]), best


def test_the_median_pruner_stops_trials_whose_curves_are_bad_early(repo, capsys):
    path = sweep_file(repo, "random", 10, 3, "{x: {uniform: [0, 10]}}", prune="median")
    assert main(["sweep", "curve.ipynb", "-f", str(path), "--parallel", "2", "-q"]) == 0
    assert "pruned:" in capsys.readouterr().out
    (parent, kids), = studies(all_runs(store(repo))).values()
    assert len(kids) == 10 and parent.info.status == "FINISHED"
    pruned = [k for k in kids if k.data.tags.get("cd4ml.trial.state") == "pruned"]
    assert len(pruned) >= 3, [(k.data.params["x"], k.data.tags.get("cd4ml.trial.state")) for k in kids]
    from mlflow.tracking import MlflowClient

    c = MlflowClient(store(repo))
    for k in pruned:
        assert k.info.status == "KILLED" and k.data.tags["cd4ml.status.reason"] == "pruned"
        history = c.get_metric_history(k.info.run_id, "loss")
        assert 1 <= len(history) < 8  # its partial curve is kept
    complete = [k for k in kids if k.data.tags.get("cd4ml.trial.state") == "complete"]
    assert len(complete) + len(pruned) == 10
    assert all(len(c.get_metric_history(k.info.run_id, "loss")) == 8 for k in complete)
    assert parent.data.tags["cd4ml.sweep.pruned"] == str(len(pruned)) and parent.data.tags["cd4ml.sweep.failed"] == "0"
    # the best trial is a complete one with the lowest final loss
    best = min(complete, key=lambda k: k.data.metrics["loss"])
    assert parent.data.tags["cd4ml.study.best_trial"] == best.data.tags["cd4ml.trial"]


def test_sigint_then_resume_completes_n_distinct_trials_under_one_parent(repo, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    path = sweep_file(repo, "tpe", 6, 4, "{x: {uniform: [0, 10]}}", extra="parameters: {pause: 1.0}\n")
    proc = subprocess.Popen([sys.executable, "-m", "cd4ml_nb.cli", "sweep", "curve.ipynb", "-f", str(path),
                             "--parallel", "2", "-q"], cwd=repo, start_new_session=True,
                            env={**os.environ, "TRIAL_MARKERS": str(markers)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # trials 0 and 1 finished (8 s each) and two more are running: interrupt them
    wait_until(lambda: len(list(markers.iterdir())) >= 4, 300, "four trials logging", proc=proc)
    started = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        end_processes(started)
    assert proc.returncode == 130, (out, err)
    (parent, kids), = studies(all_runs(store(repo))).values()
    assert parent.info.status == "KILLED" and not [k for k in kids if k.info.status == "RUNNING"]
    interrupted = {k.data.params["x"] for k in kids if k.info.status == "KILLED"}
    assert interrupted and all(k.data.tags["cd4ml.trial.state"] == "interrupted" for k in kids
                               if k.info.status == "KILLED")

    assert main(["sweep", "curve.ipynb", "-f", str(path), "--resume", "--parallel", "2", "-q"]) == 0
    (again, kids), = studies(all_runs(store(repo))).values()
    assert again.info.run_id == parent.info.run_id and again.info.status == "FINISHED"
    numbers = [int(k.data.tags["cd4ml.trial"]) for k in kids]
    assert len(numbers) == len(set(numbers))  # no trial number twice
    complete = [k for k in kids if k.data.tags["cd4ml.trial.state"] == "complete"]
    assert len(complete) == 6 and all(k.info.status == "FINISHED" for k in complete)
    assert interrupted <= {k.data.params["x"] for k in complete}  # the interrupted trials were asked again
    assert main(["sweep", "curve.ipynb", "-f", str(path), "--resume", "-q"]) == 2  # nothing left to resume


def test_the_same_study_on_dask(repo, cluster):
    uri, address, _ = cluster
    path = sweep_file(repo, "tpe", 4, 5, "{x: {uniform: [-10, 10]}, y: {uniform: [-10, 10]}}")
    assert main(["sweep", "quad.ipynb", "-f", str(path), "--dask", address, "--tracking-uri", uri, "-q"]) == 0
    (parent, kids), = studies(all_runs(uri)).values()
    assert parent.info.status == "FINISHED" and parent.data.tags["cd4ml.study"].startswith("quad.ipynb@tune@")
    assert sorted(int(k.data.tags["cd4ml.trial"]) for k in kids) == [0, 1, 2, 3]
    for k in kids:
        x, y = float(k.data.params["x"]), float(k.data.params["y"])
        assert k.info.status == "FINISHED" and k.data.tags["cd4ml.trial.state"] == "complete"
        assert k.data.metrics["loss"] == pytest.approx((x - 3.3) ** 2 + (y + 1.7) ** 2)
    assert parent.data.metrics["best_loss"] == min(k.data.metrics["loss"] for k in kids)

    # pruning on Dask: the driver reads the server (the journal forwards points live) and sets a Dask
    # Event the trial's worker watches; its kernel stops, its run keeps its partial curve
    path = sweep_file(repo, "random", 8, 3, "{x: {uniform: [0, 10]}}", prune="median")
    assert main(["sweep", "curve.ipynb", "-f", str(path), "--dask", address, "--tracking-uri", uri, "-q"]) == 0
    (parent, kids), = [v for v in studies(all_runs(uri)).values() if v[0].info.run_id != parent.info.run_id]
    pruned = [k for k in kids if k.data.tags.get("cd4ml.trial.state") == "pruned"]
    assert len(kids) == 8 and pruned and all(k.info.status == "KILLED" for k in pruned)
    from mlflow.tracking import MlflowClient

    assert all(1 <= len(MlflowClient(uri).get_metric_history(k.info.run_id, "loss")) < 8 for k in pruned)
