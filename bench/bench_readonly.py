"""Benchmark: the read-only commands on a local 1,000-run store, against MLflow's own CLI.

One temporary git repository with two branches (``master`` and ``change-max-depth``, checked out)
and its embedded SQLite store, written once by MLflow's client in this process: 500 runs per
branch's experiment over two notebooks, each run with the provenance tags ``cd4ml-nb run`` records,
eight parameters, six metrics (a loss curve of 20 steps among them), mostly FINISHED, some FAILED.
Then, alternating which goes first, several rounds after a warm-up each:

- ``cd4ml-nb runs`` (this branch's newest 50), ``cd4ml-nb compare --base master``,
  ``cd4ml-nb gate --metric nwrmsle`` and ``cd4ml-nb report`` (each reads both branches' runs);
- the peer ``mlflow runs list --experiment-id ID`` (MLflow's CLI, same store, the branch's 500 runs).

Each command runs under a small wrapper that reports its wall and CPU time and peak RSS; the table
gives medians, the ratio to the peer and the goal (≤ 1.0 s). Python byte-code caching is on for
the commands (``PYTHONDONTWRITEBYTECODE`` dropped), as for an installed package. ``--write`` replaces
this benchmark's section of docs/performance.md.

    python bench/bench_readonly.py --rounds 5 --write
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Read-only commands on a 1,000-run store"
BRANCH, BASE = "change-max-depth", "master"
NOTEBOOKS = ("notebooks/train.ipynb", "notebooks/evaluate.ipynb")
RUNS_PER_BRANCH = 500
GOAL = 1.0  # seconds, wall, for each read-only command
MEASURE = (
    "import json, resource, subprocess, sys, time\n"
    "start = time.perf_counter()\n"
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode\n"
    "wall = time.perf_counter() - start\n"
    "r = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(json.dumps({'wall': wall, 'cpu': r.ru_utime + r.ru_stime, 'rss_mb': r.ru_maxrss / 1024, 'code': code}))\n"
)


def measure(args: list[str], cwd: Path, env: dict, expect: tuple[int, ...] = (0,)) -> dict:
    """Wall, CPU and peak RSS of one command (its exit code checked)."""
    done = subprocess.run([sys.executable, "-c", MEASURE, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, check=True)
    result = json.loads(done.stdout)
    if result["code"] not in expect:
        again = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
        raise SystemExit(f"{' '.join(args)}: exit {result['code']}, expected {expect}\n{again.stderr[-2000:]}")
    return result


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def _notebook(source: str) -> str:
    cell = {"cell_type": "code", "execution_count": None, "id": "c0", "metadata": {}, "outputs": [],
            "source": source}
    return json.dumps({"cells": [cell], "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                                                    "name": "python3"}},
                       "nbformat": 4, "nbformat_minor": 5}, indent=1) + "\n"


def prepare(work: Path) -> Path:
    """The repository: two notebooks on master, a commit changing one on the branch (checked out)."""
    repo = work / "repo"
    (repo / "notebooks").mkdir(parents=True)
    for name in NOTEBOOKS:
        (repo / name).write_text(_notebook("max_depth = 4\nprint(max_depth)\n"))
    git(repo, "init", "-q", "-b", BASE)
    for args in (["config", "user.email", "b@b"], ["config", "user.name", "b"], ["add", "-A"],
                 ["commit", "-q", "-m", "base"], ["checkout", "-q", "-b", BRANCH]):
        git(repo, *args)
    (repo / NOTEBOOKS[0]).write_text(_notebook("max_depth = 6\nprint(max_depth)\n"))
    git(repo, "commit", "-q", "-am", "deeper trees")
    return repo


def build_store(repo: Path) -> tuple[str, dict[str, str], float]:
    """1,000 runs written by MLflow's client in this process; (tracking URI, experiment ids, seconds).

    MLflow's connections in this process skip fsync (``PRAGMA synchronous = OFF``): the same rows,
    written in seconds instead of minutes (a commit per call)."""
    from mlflow.entities import Metric, Param, RunTag
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from cd4ml_nb import tracking
    from cd4ml_nb.project import Project

    event.listen(Engine, "connect", lambda connection, _: connection.execute("PRAGMA synchronous = OFF"))
    start = time.perf_counter()
    project = Project.discover(repo)
    c = tracking.client(project)  # creates the embedded store complete
    rng = random.Random(7)
    ids, t0 = {}, int(time.time() * 1000) - 2 * RUNS_PER_BRANCH * 60_000
    merge_base = git(repo, "merge-base", BASE, BRANCH)
    for b, branch in enumerate((BASE, BRANCH)):
        ids[branch] = tracking.ensure_experiment(c, project, branch)
        commit = git(repo, "rev-parse", branch)
        for n in range(RUNS_PER_BRANCH):
            notebook = NOTEBOOKS[n % 2]
            depth = 4 + 2 * b
            params = {"max_depth": depth, "n_estimators": 100 + n % 3 * 50, "learning_rate": 0.1, "seed": n,
                      "train_path": "data/train.csv", "target": "unit_sales", "features": "store,item,day",
                      "min_samples_leaf": 3}
            tags = {**tracking.provenance_tags(project, None, notebook), tracking.GIT_COMMIT: commit,
                    tracking.GIT_BRANCH: branch, tracking.DIRTY: "false", "cd4ml.git.base_branch": BASE,
                    "cd4ml.git.merge_base": merge_base, "cd4ml.notebook.side": notebook, "cd4ml.kind": "run",
                    tracking.SOURCE_SHA: f"{n:064x}", "cd4ml.env.hash": "e" * 16, "mlflow.user": "bench",
                    tracking.KERNEL: "python3", "cd4ml.params.json": json.dumps(params, sort_keys=True)}
            started = t0 + (b * RUNS_PER_BRANCH + n) * 60_000
            run_id = c.create_run(ids[branch], start_time=started, tags=tags, run_name=f"{Path(notebook).stem}-{n}"
                                  ).info.run_id
            score = 0.60 - 0.02 * b + rng.uniform(-0.01, 0.01)
            metrics = [Metric("loss", score * (1 + 1 / (step + 1)), started + step, step) for step in range(20)]
            metrics += [Metric(name, value, started + 20, 0) for name, value in (
                ("nwrmsle", score), ("rmse", 2 * score), ("mae", 1.5 * score), ("r2", 1 - score),
                ("train_seconds", rng.uniform(1, 3)))]
            c.log_batch(run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()],
                        tags=[RunTag(tracking.OUTPUT_DIR, f".cd4ml/runs/{run_id}")])
            failed = n % 25 == 24
            if failed:
                c.set_tag(run_id, tracking.REASON, "cell-exception")
            c.set_terminated(run_id, "FAILED" if failed else "FINISHED", end_time=started + 30_000)
    return project.tracking_uri, ids, time.perf_counter() - start


def how_reads_go(uri: str) -> str:
    from cd4ml_nb import store
    from cd4ml_nb.sqlite_client import open_client
    from cd4ml_nb.store import installed_head

    if open_client(store.sqlite_path(uri), uri) is not None:
        return f"the light client can read this store (MLflow schema {installed_head()}, verified)"
    return f"reads go through `MlflowClient` (the installed MLflow's schema {installed_head()} is not verified)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="replace this section of docs/performance.md")
    args = parser.parse_args()
    cd4ml, mlflow_cli = shutil.which("cd4ml-nb"), shutil.which("mlflow")
    if not cd4ml or not mlflow_cli:
        print("needs cd4ml-nb and mlflow on PATH (pip install .)", file=sys.stderr)
        return 2
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PYTHONDONTWRITEBYTECODE")}
    rows = ["| command | wall (s) | CPU (s) | peak RSS (MB) | wall ratio to `mlflow runs list` | goal |",
            "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        repo = prepare(Path(tmp))
        uri, ids, seconds = build_store(repo)
        reads = how_reads_go(uri)
        print(f"store of {2 * RUNS_PER_BRANCH} runs written in {seconds:.1f} s; {reads}", flush=True)
        peer_env = {**env, "MLFLOW_TRACKING_URI": uri}
        commands = {
            "`cd4ml-nb runs`": ([cd4ml, "runs"], env, (0,)),
            "`cd4ml-nb compare --base master`": ([cd4ml, "compare", "--base", BASE], env, (0,)),
            "`cd4ml-nb gate --metric nwrmsle`": ([cd4ml, "gate", "--metric", "nwrmsle", "--base", BASE], env, (0,)),
            "`cd4ml-nb report`": ([cd4ml, "report", "--base", BASE], env, (0,)),
            "peer: `mlflow runs list --experiment-id ID`": (
                [mlflow_cli, "runs", "list", "--experiment-id", ids[BRANCH]], peer_env, (0,)),
            "for scale: `python -c 'import mlflow'`": ([sys.executable, "-c", "import mlflow"], env, (0,)),
        }
        results: dict[str, list[dict]] = {name: [] for name in commands}
        for argv, command_env, expect in commands.values():  # warm-up: byte-code and OS caches
            measure(argv, repo, command_env, expect)
        names = list(commands)
        for n in range(args.rounds):
            for name in names if n % 2 == 0 else reversed(names):
                argv, command_env, expect = commands[name]
                results[name].append(measure(argv, repo, command_env, expect))
            print(f"  round {n + 1}: " + ", ".join(f"{name.split('`')[1]} {results[name][-1]['wall']:.2f}s"
                                                   for name in names), flush=True)
    peer = statistics.median(r["wall"] for r in results[names[-2]])
    for name in names:
        wall, cpu, rss = (statistics.median(r[k] for r in results[name]) for k in ("wall", "cpu", "rss_mb"))
        ours = name.startswith("`cd4ml-nb")
        goal = (f"≤ {GOAL:.1f} s {'✓' if wall <= GOAL else '✗'}") if ours else ""
        rows.append(f"| {name} | {wall:.2f} | {cpu:.2f} | {rss:.0f} | {'**' if ours else ''}{wall / peer:.2f}"
                    f"{'**' if ours else ''} | {goal} |")
    print("\n".join(rows))
    if args.write:
        from performance_doc import machine_and_day

        machine, today = machine_and_day()
        body = (f"{SECTION}\n\nGenerated by `python bench/bench_readonly.py --rounds {args.rounds} --write` on {today} "
                f"({machine}); medians of {args.rounds} alternating rounds after a warm-up. A git repository with "
                f"two branches and its embedded store of {2 * RUNS_PER_BRANCH} runs written by MLflow "
                f"({RUNS_PER_BRANCH} per branch, two notebooks, provenance tags, 8 parameters, 6 metrics of which "
                f"a 20-step curve); {reads}. The peer lists the branch's {RUNS_PER_BRANCH} runs. Byte-code caching "
                f"on, as for an installed package.\n\n" + "\n".join(rows) + "\n")
        from performance_doc import write_section

        write_section(SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
