"""Benchmark: cost per logged point of team mode's journal against plain ``mlflow.log_metric``.

One real `mlflow server` (SQLite backend, as `cd4ml-nb server` starts it). Alternating rounds, each
on a fresh run of that server:

- **plain**: ``mlflow.log_metric`` with the server as tracking URI (one HTTP request per point);
- **journal**: ``mlflow.log_metric`` with the kernel's ``cd4ml-journal:`` URI, while the runner's
  forwarder (:class:`cd4ml_nb.spool.LiveForwarder`) sends the journal to the same server. The
  forwarder runs as a thread of the *same* process here (in a real run it lives in the runner), so it
  competes with the logging loop for the GIL: the figure is pessimistic.

Reported per point, medians over rounds: the call cost in the notebook's process, and the time until
the server has every point ("on server", which for the journal includes forwarding).

    python bench/bench_journal.py --points 500 --rounds 5
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def start_server(work: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "cd4ml_nb.cli", "server", "--port", str(port), "--workers", "1"],
                            cwd=work, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
            return proc
        except OSError:
            time.sleep(0.3)
    raise SystemExit("the mlflow server did not start")


def round_plain(uri: str, experiment: str, points: int) -> tuple[float, float]:
    import mlflow

    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(experiment_id=experiment):
        start = time.perf_counter()
        for i in range(points):
            mlflow.log_metric("loss", 1.0 / (i + 1), step=i)
        took = time.perf_counter() - start
    return took / points, took / points  # every call returned after the server stored the point


def round_journal(uri: str, experiment: str, points: int, work: Path, n: int) -> tuple[float, float]:
    import mlflow
    from mlflow.tracking import MlflowClient

    from cd4ml_nb import journal, spool

    journal.register()
    server = MlflowClient(uri)
    run = server.create_run(experiment)
    folder = work / f"journal-{n}"
    local, held = journal.create(folder, uri, server.get_run(run.info.run_id))
    live = spool.LiveForwarder(folder, held, heartbeat=None, timeout=10.0)
    live.start()
    mlflow.set_tracking_uri(local)
    start = time.perf_counter()
    with mlflow.start_run(run_id=run.info.run_id):
        for i in range(points):
            mlflow.log_metric("loss", 1.0 / (i + 1), step=i)
    called = time.perf_counter() - start
    while len(server.get_metric_history(run.info.run_id, "loss")) < points:
        time.sleep(0.01)
    on_server = time.perf_counter() - start
    live.stop()
    journal.forget(local)
    return called / points, on_server / points


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subprocess.run(["git", "init", "-q", "-b", "master"], cwd=work, check=True)
        port = free_port()
        uri = f"http://127.0.0.1:{port}"
        server = start_server(work, port)
        try:
            experiment = MlflowClient(uri).create_experiment("bench")
            round_plain(uri, experiment, 20)  # warm-up: imports, connections, the server's caches
            round_journal(uri, experiment, 20, work, -1)
            plain, ours = [], []
            for n in range(args.rounds):
                plain.append(round_plain(uri, experiment, args.points))
                ours.append(round_journal(uri, experiment, args.points, work, n))
        finally:
            import signal

            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
    call_plain, call_ours = (statistics.median(x[0] for x in rows) for rows in (plain, ours))
    end_plain, end_ours = (statistics.median(x[1] for x in rows) for rows in (plain, ours))
    print(f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{args.points} points x {args.rounds} rounds, medians per point")
    print("| | plain mlflow.log_metric | journal + forward | ratio |")
    print("|---|---|---|---|")
    print(f"| call, in the notebook | {call_plain * 1e6:.0f} us | {call_ours * 1e6:.0f} us | "
          f"{call_ours / call_plain:.2f}x |")
    print(f"| until on the server | {end_plain * 1e6:.0f} us | {end_ours * 1e6:.0f} us | "
          f"{end_ours / end_plain:.2f}x |")
    return 0 if call_ours <= call_plain else 1


if __name__ == "__main__":
    sys.exit(main())
