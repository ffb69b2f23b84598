"""Benchmark: the fixed cost cd4ml-nb adds to papermill, per run, per sweep trial and per command.

On papermill's own test notebook ``simple_execute.ipynb`` (a cell that prints a parameter: the
cost a CI smoke run, a sweep trial and a Lab job all pay), side by side in one temporary git
repository, alternating which goes first, after one warm-up each:

- ``cd4ml-nb run`` (tracking, artifacts, HTML) against bare ``papermill``: wall time, CPU time of
  the whole process tree and peak RSS of its largest process;
- an 8-trial ``cd4ml-nb sweep --parallel 2`` against 8 sequential bare ``papermill`` runs;
- ``cd4ml-nb params`` and a refused ``-p`` value against ``papermill --help-notebook``;
- ``cd4ml-nb ui`` against bare ``mlflow ui`` on the same store: time to the first HTTP 200.

Each command runs under a small Python wrapper that reports its children's resource usage, so
CPU includes the kernel. Reports medians and ratios; ``--write`` replaces this benchmark's section
of docs/performance.md.

    python bench/bench_overhead.py --rounds 5 --write
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Fixed overhead over papermill (`simple_execute.ipynb`)"
MEASURE = (
    "import json, resource, subprocess, sys, time\n"
    "start = time.perf_counter()\n"
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode\n"
    "wall = time.perf_counter() - start\n"
    "r = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(json.dumps({'wall': wall, 'cpu': r.ru_utime + r.ru_stime, 'rss_mb': r.ru_maxrss / 1024, 'code': code}))\n"
)


def measure(args: list[str], cwd: Path, env: dict, expect: int = 0) -> dict:
    """Wall, CPU (whole tree) and peak RSS (largest process) of one command."""
    done = subprocess.run([sys.executable, "-c", MEASURE, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, check=True)
    result = json.loads(done.stdout)
    if result["code"] != expect:
        raise SystemExit(f"{' '.join(args)}: exit {result['code']}, expected {expect}")
    return result


def prepare(work: Path) -> tuple[Path, Path]:
    import papermill

    source = Path(papermill.__file__).parent / "tests" / "notebooks" / "simple_execute.ipynb"
    repo = work / "repo"
    repo.mkdir()
    shutil.copy(source, repo / "simple_execute.ipynb")
    for args in (["init", "-q", "-b", "master"], ["config", "user.email", "b@b"], ["config", "user.name", "b"],
                 ["add", "-A"], ["commit", "-q", "-m", "bench"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    return repo, repo / "simple_execute.ipynb"


def alternate(rounds: int, ours, theirs) -> tuple[list[dict], list[dict]]:
    a, b = [], []
    for n in range(rounds):
        order = [(a, ours), (b, theirs)] if n % 2 == 0 else [(b, theirs), (a, ours)]
        for results, run in order:
            results.append(run())
        print(f"  round {n + 1}: ours {a[-1]['wall']:.2f}s/{a[-1]['cpu']:.2f}s cpu, "
              f"theirs {b[-1]['wall']:.2f}s/{b[-1]['cpu']:.2f}s cpu", flush=True)
    return a, b


def med(results: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in results)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_200(command: list[str], url: str, cwd: Path, env: dict, timeout: float = 600, ours: bool = False) -> float:
    """Seconds from start to the first HTTP 200 on ``url``; then SIGTERM, and the rest of the tree is
    ended by pid. For ``ours``, a process of the tree that survives the SIGTERM is an error."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        while time.perf_counter() - start < timeout:
            if proc.poll() is not None:
                raise SystemExit(f"{command[0]} exited with {proc.returncode} before answering")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return time.perf_counter() - start
            except OSError:
                pass
            time.sleep(0.05)  # a benchmark's polling interval, not test synchronisation
        raise SystemExit(f"{url}: no answer within {timeout:.0f} s")
    finally:
        tree = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))] \
            if proc.poll() is None else []
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        survivors = [p for p in tree if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        for pid in survivors:
            os.kill(pid, signal.SIGKILL)
        if ours and survivors:  # nothing of our tree may outlive a SIGTERM to its root
            raise SystemExit(f"processes {survivors} of {command[:3]} survived SIGTERM")


def how_runs_write(db: Path) -> str:
    """Which client ``cd4ml-nb run`` records through on this store (the light one needs a verified schema)."""
    from cd4ml_nb.sqlite_client import open_client
    from cd4ml_nb.store import installed_head

    if open_client(db, f"sqlite:///{db}") is not None:
        return f"their own rows through `cd4ml_nb.sqlite_client` (MLflow schema {installed_head()}, no MLflow import)"
    return f"through `MlflowClient` (the installed MLflow's schema {installed_head()} is not verified)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="replace this section of docs/performance.md")
    args = parser.parse_args()
    cd4ml, papermill = shutil.which("cd4ml-nb"), shutil.which("papermill")
    if not cd4ml or not papermill:
        print("needs cd4ml-nb and papermill on PATH (pip install .)", file=sys.stderr)
        return 2
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    rows: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        repo, nb = prepare(Path(tmp))
        out = str(Path(tmp) / "out.ipynb")
        run_ours = lambda: measure([cd4ml, "run", nb.name, "-q"], repo, env)  # noqa: E731
        run_theirs = lambda: measure([papermill, nb.name, out, "--no-progress-bar"], repo, env)  # noqa: E731
        run_ours(), run_theirs()  # warm-up: the embedded store is created, OS caches filled
        writer = how_runs_write(repo / ".cd4ml" / "mlflow.db")
        print(f"runs write {writer}", flush=True)
        print("run", flush=True)
        ours, theirs = alternate(args.rounds, run_ours, run_theirs)
        wall, cpu, rss = (med(ours, k) / med(theirs, k) for k in ("wall", "cpu", "rss_mb"))
        rows += [
            "| measure | cd4ml-nb | papermill | ratio | goal |",
            "|---|---|---|---|---|",
            f"| `run`: wall (s) | {med(ours, 'wall'):.2f} | {med(theirs, 'wall'):.2f} | **{wall:.2f}** | ≤ 1.10 |",
            f"| `run`: CPU of the process tree (s) | {med(ours, 'cpu'):.2f} | {med(theirs, 'cpu'):.2f} | "
            f"**{cpu:.2f}** | ≤ 1.3 |",
            f"| `run`: peak RSS of the largest process (MB) | {med(ours, 'rss_mb'):.0f} | "
            f"{med(theirs, 'rss_mb'):.0f} | **{rss:.2f}** | ≤ 1.5 |",
        ]

        floor = [measure([sys.executable, "-c", "import mlflow"], repo, env) for _ in range(args.rounds)]
        rows.append(f"| for scale: `import mlflow` alone, CPU (s) / RSS (MB) | {med(floor, 'cpu'):.2f} / "
                    f"{med(floor, 'rss_mb'):.0f} | | {med(floor, 'cpu') / med(theirs, 'cpu'):.2f} / "
                    f"{med(floor, 'rss_mb') / med(theirs, 'rss_mb'):.2f} of papermill's run | |")

        trials = [f"t{i}" for i in range(8)]
        sweep = lambda: measure([cd4ml, "sweep", nb.name, "--grid", f"msg={','.join(trials)}",  # noqa: E731
                                 "--parallel", "2", "-q"], repo, env)

        def sequential() -> dict:
            parts = [measure([papermill, nb.name, out, "-p", "msg", t, "--no-progress-bar"], repo, env)
                     for t in trials]
            return {"wall": sum(p["wall"] for p in parts), "cpu": sum(p["cpu"] for p in parts),
                    "rss_mb": max(p["rss_mb"] for p in parts)}

        print("sweep", flush=True)
        s_ours, s_theirs = alternate(max(1, args.rounds // 2), sweep, sequential)
        rows.append(f"| 8-trial `sweep --parallel 2` vs 8 sequential papermill: wall (s) | "
                    f"{med(s_ours, 'wall'):.2f} | {med(s_theirs, 'wall'):.2f} | "
                    f"**{med(s_ours, 'wall') / med(s_theirs, 'wall'):.2f}** | ≤ 0.40 |")

        print("params", flush=True)
        help_nb = lambda: measure([papermill, "--help-notebook", nb.name], repo, env)  # noqa: E731
        p_ours, p_theirs = alternate(args.rounds, lambda: measure([cd4ml, "params", nb.name], repo, env), help_nb)
        r_ours, r_theirs = alternate(args.rounds, lambda: measure(
            [cd4ml, "run", nb.name, "-p", "nope", "1"], repo, env, expect=2), help_nb)
        rows += [
            f"| `params NB` vs `papermill --help-notebook NB`: wall (s) | {med(p_ours, 'wall'):.2f} | "
            f"{med(p_theirs, 'wall'):.2f} | **{med(p_ours, 'wall') / med(p_theirs, 'wall'):.2f}** | ≤ 1.0 |",
            f"| `run NB -p nope 1` refused (exit 2) vs `--help-notebook`: wall (s) | {med(r_ours, 'wall'):.2f} | "
            f"{med(r_theirs, 'wall'):.2f} | **{med(r_ours, 'wall') / med(r_theirs, 'wall'):.2f}** | ≤ 1.0 |",
        ]

        print("ui", flush=True)
        store = f"sqlite:///{repo / '.cd4ml' / 'mlflow.db'}"
        u_ours, u_theirs = [], []
        for n in range(max(1, args.rounds // 2)):
            port = free_port()
            ours_ui = lambda: first_200([cd4ml, "ui", "--no-browser", "--port", str(port)],  # noqa: E731
                                        f"http://127.0.0.1:{port}/", repo, env, ours=True)
            theirs_ui = lambda: first_200([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store,  # noqa: E731
                                           "--host", "127.0.0.1", "--port", str(port)],
                                          f"http://127.0.0.1:{port}/", repo, env)
            for results, run in ([(u_ours, ours_ui), (u_theirs, theirs_ui)] if n % 2 == 0
                                 else [(u_theirs, theirs_ui), (u_ours, ours_ui)]):
                results.append(run())
            print(f"  round {n + 1}: cd4ml-nb ui {u_ours[-1]:.2f}s, mlflow ui {u_theirs[-1]:.2f}s", flush=True)
        rows.append(f"| `ui` vs bare `mlflow ui`, same store: first HTTP 200 (s) | {statistics.median(u_ours):.2f} | "
                    f"{statistics.median(u_theirs):.2f} | "
                    f"**{statistics.median(u_ours) / statistics.median(u_theirs):.2f}** | ≤ 1.2 |")
    print("\n".join(rows))
    if args.write:
        from performance_doc import machine_and_day

        machine, today = machine_and_day()
        body = (f"{SECTION}\n\nGenerated by `python bench/bench_overhead.py --rounds {args.rounds} --write` on {today} "
                f"({machine}); medians of {args.rounds} alternating rounds after a warm-up (sweeps and `ui`: "
                f"{max(1, args.rounds // 2)}). CPU is the whole process tree (parent, guard, kernel); RSS is the "
                f"largest single process. Papermill's column for the sweep is the sum of 8 runs. Runs wrote "
                f"{writer}.\n\n"
                + "\n".join(rows) + "\n")
        from performance_doc import write_section

        write_section(SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
