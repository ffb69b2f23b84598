"""Benchmark: team mode on a PostgreSQL-backed `cd4ml-nb server` against the embedded default store.

The same notebook (200 ``loss`` points, one parameter) and the same two workloads on each store:

- **runs**: 16 `cd4ml-nb run` processes started at once;
- **sweep**: one `cd4ml-nb sweep` of 16 trials (``--parallel 4``).

Team mode: a `cd4ml-nb server` whose backend is a database of a throwaway PostgreSQL cluster
(``tests/pgcluster.py``: Debian's binaries, 127.0.0.1), each run journaled locally and forwarded.
Embedded: the project's own SQLite store, no server. Wall-clock per workload, alternating which store
goes first each round; the ratio is team ÷ embedded. While the team workloads run, the RSS of the
server's process tree (`cd4ml-nb server`, `mlflow server`, its workers and job runners) is sampled every
0.5 s; its peak and its unique memory (USS) at the end are reported. At the end every run on the server
is checked: FINISHED, exactly 200 points, its executed notebook among its artifacts, nothing pending.

    python bench/bench_team.py [--rounds 1] [--write]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

RUNS, TRIALS, PARALLEL, POINTS = 16, 16, 4, 200
NOTEBOOK = f"""# %% tags=["parameters"]
x: int = 0

# %%
import mlflow
for i in range({POINTS}):
    mlflow.log_metric("loss", (x - 3) ** 2 + i, step=i)
"""
SECTION = "## Team mode: a PostgreSQL-backed server against the embedded store"


def make_repo(base: Path) -> Path:
    repo = base / "repo"
    repo.mkdir(parents=True)
    (repo / "loop.py").write_text(NOTEBOOK)
    for args in (["init", "-q", "-b", "master"], ["add", "-A"],
                 ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "b"]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    return repo


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cd4ml_nb.cli", *args]


def concurrent_runs(repo: Path, env: dict, uri: list[str]) -> float:
    start = time.perf_counter()
    procs = [subprocess.Popen(cli("run", "loop.py", "-q", "--no-html", "-p", "x", str(i), *uri), cwd=repo, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(RUNS)]
    errors = [p.communicate()[1] for p in procs]
    took = time.perf_counter() - start
    failed = [e for p, e in zip(procs, errors) if p.returncode]
    assert not failed, failed[0][-2000:]
    return took


def sweep(repo: Path, env: dict, uri: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cli("sweep", "loop.py", "--grid", "x=" + ",".join(map(str, range(TRIALS))), "--parallel",
                              str(PARALLEL), "-q", *uri), cwd=repo, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    assert done.returncode == 0, (done.stdout + done.stderr)[-2000:]
    return took


class TreeMemory(threading.Thread):
    """Samples the RSS of a process and all its descendants every 0.5 s; keeps the peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.halt = pid, 0, threading.Event()

    def tree(self) -> list:
        import psutil

        root = psutil.Process(self.pid)
        return [root, *root.children(recursive=True)]

    def rss(self) -> int:
        import psutil

        total = 0
        for p in self.tree():
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total

    def uss(self) -> tuple[int, int]:
        """(unique memory of the tree, processes in it)."""
        import psutil

        total, procs = 0, self.tree()
        for p in procs:
            try:
                total += p.memory_full_info().uss
            except psutil.NoSuchProcess:
                continue
        return total, len(procs)

    def run(self) -> None:
        while not self.halt.wait(0.5):
            self.peak = max(self.peak, self.rss())


def start_server(repo: Path, env: dict, port: int, backend: str) -> subprocess.Popen:
    proc = subprocess.Popen(cli("server", "--port", str(port), "--workers", "1"), cwd=repo,
                            env={**env, "MLFLOW_BACKEND_STORE_URI": backend}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("the server exited at start")
            time.sleep(0.3)
    raise SystemExit("the server did not start")


def check_server(uri: str, repo: Path) -> tuple[int, int, int]:
    """(runs whole on the server, runs, journals pending): whole is FINISHED, every point once, the
    executed notebook there, no reason tag."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    ids = [e.experiment_id for e in c.search_experiments()]
    runs = [r for r in c.search_runs(ids, max_results=1000) if r.data.tags.get("cd4ml.sweep") != "true"]
    whole = 0
    for r in runs:
        steps = sorted(int(m.step) for m in c.get_metric_history(r.info.run_id, "loss"))
        names = {a.path for a in get_artifact_repository(r.info.artifact_uri, tracking_uri=uri).list_artifacts()}
        whole += (r.info.status == "FINISHED" and steps == list(range(POINTS)) and "loop.ipynb" in names
                  and "cd4ml.status.reason" not in r.data.tags)
    pending = list((repo / ".cd4ml" / "spool").iterdir()) if (repo / ".cd4ml" / "spool").is_dir() else []
    return whole, len(runs), len(pending)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--write", action="store_true", help="write the figures into docs/performance.md")
    args = parser.parse_args()
    import pgcluster
    from nbfactory import free_port

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    times: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        team_repo, embedded_repo = make_repo(Path(tmp) / "team"), make_repo(Path(tmp) / "embedded")
        port = free_port()
        uri = f"http://127.0.0.1:{port}"
        server = start_server(team_repo, env, port, pgcluster.database("bench_team"))
        memory = TreeMemory(server.pid)
        idle = memory.rss()
        try:
            subprocess.run(cli("run", "loop.py", "-q", "--no-html"), cwd=embedded_repo, env=env, check=True,
                           capture_output=True)  # creates the embedded store (not timed)
            for n in range(args.rounds):
                for store in (["team", "embedded"] if n % 2 == 0 else ["embedded", "team"]):
                    repo, where = (team_repo, ["--tracking-uri", uri]) if store == "team" else (embedded_repo, [])
                    if store == "team" and not memory.is_alive():
                        memory.start()
                    for name, workload in (("runs", concurrent_runs), ("sweep", sweep)):
                        times.setdefault((store, name), []).append(workload(repo, env, where))
                        print(f"round {n + 1}: {store} {name} {times[store, name][-1]:.1f} s", flush=True)
            memory.halt.set()
            uss, procs = memory.uss()
            whole, total, pending = check_server(uri, team_repo)
        finally:
            os.killpg(server.pid, 15)
            server.wait(timeout=60)
    med = {key: statistics.median(v) for key, v in times.items()}
    mb = 2 ** 20
    rows = ["| workload | PostgreSQL server (s) | embedded (s) | ratio |", "|---|---|---|---|",
            f"| {RUNS} concurrent `cd4ml-nb run` ({POINTS} points each) | {med['team', 'runs']:.1f} | "
            f"{med['embedded', 'runs']:.1f} | **{med['team', 'runs'] / med['embedded', 'runs']:.2f}** |",
            f"| `cd4ml-nb sweep`, {TRIALS} trials, --parallel {PARALLEL} | {med['team', 'sweep']:.1f} | "
            f"{med['embedded', 'sweep']:.1f} | **{med['team', 'sweep'] / med['embedded', 'sweep']:.2f}** |",
            "", "| server process tree | |", "|---|---|",
            f"| RSS idle, after start | {idle / mb:.0f} MB |",
            f"| RSS peak during the team workloads | {memory.peak / mb:.0f} MB |",
            f"| unique memory (USS) at the end, {procs} processes | {uss / mb:.0f} MB |",
            f"| runs whole on the server (FINISHED, {POINTS} points once, executed notebook there, no reason tag) "
            f"| {whole} of {total} |", f"| journals left pending | {pending} |"]
    print("\n".join(rows))
    if args.write:
        from performance_doc import write_section

        from performance_doc import machine_and_day

        machine, today = machine_and_day()
        body = (f"{SECTION}\n\nGenerated by `python bench/bench_team.py --rounds {args.rounds} --write` on {today} "
                f"({machine}; PostgreSQL {pgcluster.bin_dir().parent.name}, one MLflow worker). Wall-clock medians; "
                "the ratio is the PostgreSQL-backed `cd4ml-nb server` ÷ the embedded SQLite store. A shared, noisy "
                "machine: read the ratios, not the seconds.\n\n" + "\n".join(rows) + "\n")
        write_section(SECTION, body)
    return 0 if whole == total and not pending else 1


if __name__ == "__main__":
    sys.exit(main())
