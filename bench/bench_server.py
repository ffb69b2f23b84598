"""Benchmarks of the server extension.

1. What loading the extension adds to `jupyter server` start-up: the import and registration of
   ``cd4ml_nb`` measured in-process after jupyter_server itself is loaded (median of fresh
   processes), and the wall time to a ready server with and without the extension (alternating).
2. ``GET /cd4ml-nb/runs``'s first page on a store holding 10,000 runs (the core call behind it).
3. The event loop under load: Jupyter's own ``/api/status`` latency (median, p95) idle, then while
   ``GET /cd4ml-nb/runs?max_results=500`` is listed over and over against a store of ``--loop-runs``
   runs (handlers must do their blocking work off the loop, so the ratio stays near 1).

    python bench/bench_server.py [--rounds 5] [--runs 10000] [--loop-runs 1000] [--part loop] [--write]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LOAD_PROBE = """
import time
import jupyter_server.serverapp, jupyter_server.base.handlers, tornado.web  # the server's own cost
from jupyter_server.auth.decorator import authorized  # noqa
start = time.perf_counter()
import cd4ml_nb
from cd4ml_nb.routes import setup_route_handlers
from traitlets.config import LoggingConfigurable
class App(LoggingConfigurable):  # the parts of ServerApp the extension touches
    root_dir = {root!r}
    web_app = tornado.web.Application(base_url="/")
setup_route_handlers(App())
print(time.perf_counter() - start)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_ready_seconds(root: Path, enabled: bool) -> float:
    port, token = free_port(), "bench"
    cmd = [sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root", f"--port={port}",
           "--ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           f"--ServerApp.jpserver_extensions={{'cd4ml_nb': {enabled}}}"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                url = f"http://127.0.0.1:{port}/api/status?token={token}"
                with urllib.request.urlopen(url, timeout=1):
                    return time.perf_counter() - start
            except OSError:
                time.sleep(0.02)
    finally:
        proc.terminate()
        proc.wait()


def bench_load(rounds: int, root: Path) -> dict:
    load = [float(subprocess.run([sys.executable, "-c", LOAD_PROBE.format(root=str(root))], check=True,
                                 capture_output=True, text=True).stdout.split()[-1]) for _ in range(rounds)]
    with_ext, without = [], []
    for n in range(rounds):
        order = [True, False] if n % 2 == 0 else [False, True]
        for enabled in order:
            (with_ext if enabled else without).append(server_ready_seconds(root, enabled))
    return {"load_ms": statistics.median(load) * 1000, "with_s": statistics.median(with_ext),
            "without_s": statistics.median(without)}


def fill_store(root: Path, count: int, experiment: str = "master") -> float:
    """``count`` FINISHED runs (a metric, a parameter, tags) in ``experiment``; seconds it took."""
    from mlflow.entities import Metric, Param, RunTag

    from cd4ml_nb import tracking
    from cd4ml_nb.project import Project

    project = Project.discover(root)
    c = tracking.client(project)
    exp = tracking.ensure_experiment(c, project, experiment)
    start = time.perf_counter()
    for i in range(count):
        run = c.create_run(exp, tags={tracking.NOTEBOOK: f"nb{i % 10}.ipynb"})
        c.log_batch(run.info.run_id, metrics=[Metric("score", i / count, 0, 0)],
                    params=[Param("max_depth", str(i % 12))], tags=[RunTag("cd4ml.bench", "1")])
        c.set_terminated(run.info.run_id, "FINISHED")
    return time.perf_counter() - start


def bench_runs(count: int, root: Path) -> dict:
    from cd4ml_nb import tracking
    from cd4ml_nb.project import Project

    fill = fill_store(root, count)
    project = Project.discover(root)
    times, filtered = [], []
    for _ in range(5):
        start = time.perf_counter()
        page = tracking.runs_page(project, "master", None, 50)
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
        tracking.runs_page(project, "master", "nb3.ipynb", 50)
        filtered.append(time.perf_counter() - start)
    assert len(page.runs) == 50 and page.next_page_token
    return {"runs": count, "fill_s": fill, "first_page_ms": statistics.median(times) * 1000,
            "first_page_filtered_ms": statistics.median(filtered) * 1000}


def _get_seconds(url: str, token: str) -> float:
    start = time.perf_counter()
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=120) as response:
        response.read()
    return time.perf_counter() - start


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 2 else values[0]


def bench_loop(root: Path, runs: int, samples: int) -> dict:
    """/api/status latency idle, then while GET runs?max_results=500 is listed back to back."""
    fill = fill_store(root, runs)
    port, token = free_port(), "bench"
    cmd = [sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root", f"--port={port}",
           "--ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    base = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                _get_seconds(f"{base}api/status", token)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        runs_url = f"{base}cd4ml-nb/runs?max_results=500"
        warm = [_get_seconds(runs_url, token) for _ in range(3)]  # imports mlflow, opens the store
        status_url = f"{base}api/status"
        idle = []
        for _ in range(samples):
            idle.append(_get_seconds(status_url, token))
            time.sleep(0.01)
        stop = threading.Event()
        listing: list[float] = []

        def list_runs() -> None:
            while not stop.is_set():
                listing.append(_get_seconds(runs_url, token))

        workers = [threading.Thread(target=list_runs, daemon=True)]  # one listing at a time, back to back
        for w in workers:
            w.start()
        while not listing:  # the listing is under way
            time.sleep(0.01)
        busy = []
        for _ in range(samples):
            busy.append(_get_seconds(status_url, token))
            time.sleep(0.01)
        stop.set()
        for w in workers:
            w.join(timeout=120)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return {"runs": runs, "fill_s": fill, "samples": samples, "warm_runs_ms": statistics.median(warm) * 1000,
            "runs_page_ms": statistics.median(listing) * 1000, "runs_listed": len(listing),
            "idle_median_ms": statistics.median(idle) * 1000, "idle_p95_ms": _p95(idle) * 1000,
            "busy_median_ms": statistics.median(busy) * 1000, "busy_p95_ms": _p95(busy) * 1000,
            "ratio_median": statistics.median(busy) / statistics.median(idle), "ratio_p95": _p95(busy) / _p95(idle)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--loop-runs", type=int, default=1000, help="runs in the store for the event-loop bench")
    parser.add_argument("--samples", type=int, default=200, help="/api/status requests idle, and again busy")
    parser.add_argument("--part", choices=("all", "load", "runs", "loop"), default="all")
    parser.add_argument("--write", action="store_true", help="append the results to docs/performance.md")
    args = parser.parse_args()
    rows = ["| measure | median | target |", "|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("all", "load", "runs"):
            root = Path(tmp) / "load"
            subprocess.run(["git", "init", "-q", "-b", "master", str(root)], check=True)
        if args.part in ("all", "load"):
            load = bench_load(args.rounds, root)
            print(json.dumps(load), flush=True)
            rows += [
                f"| import + registration of `cd4ml_nb` in a loaded server | {load['load_ms']:.0f} ms | ≤ 100 ms |",
                f"| `jupyter server` ready, extension enabled | {load['with_s']:.2f} s | |",
                f"| `jupyter server` ready, extension disabled | {load['without_s']:.2f} s | |",
            ]
        if args.part in ("all", "runs"):
            runs = bench_runs(args.runs, root)
            print(json.dumps(runs), flush=True)
            rows += [
                f"| `GET runs` first page (50) of {runs['runs']:,} runs | {runs['first_page_ms']:.0f} ms "
                "| ≤ 500 ms |",
                f"| same, filtered to one notebook | {runs['first_page_filtered_ms']:.0f} ms | ≤ 500 ms |",
            ]
        if args.part in ("all", "loop"):
            root = Path(tmp) / "loop"
            subprocess.run(["git", "init", "-q", "-b", "master", str(root)], check=True)
            loop = bench_loop(root, args.loop_runs, args.samples)
            print(json.dumps(loop), flush=True)
            rows += [
                f"| `/api/status` idle (p95 {loop['idle_p95_ms']:.1f} ms) | {loop['idle_median_ms']:.1f} ms | |",
                f"| `/api/status` while `GET runs?max_results=500` of {loop['runs']:,} runs is listed "
                f"(p95 {loop['busy_p95_ms']:.1f} ms) | {loop['busy_median_ms']:.1f} ms | ≤ 100 ms |",
                f"| ratio busy / idle: median, p95 | {loop['ratio_median']:.1f}×, {loop['ratio_p95']:.1f}× | |",
                f"| `GET runs?max_results=500` meanwhile ({loop['runs_listed']} listed) | "
                f"{loop['runs_page_ms']:.0f} ms | |",
            ]
    print("\n".join(rows))
    if args.write:
        from performance_doc import machine_and_day

        machine, today = machine_and_day()
        doc = ROOT / "docs" / "performance.md"
        text = doc.read_text() if doc.exists() else "# Performance\n"
        marker = "\n## Server extension\n"
        before, _, rest = text.partition(marker)
        after = rest[rest.find("\n## "):] if "\n## " in rest else ""  # the sections that follow stay
        text = before.rstrip("\n") + "\n" + marker + (
            f"\nGenerated by `python bench/bench_server.py --rounds {args.rounds} --runs {args.runs} "
            f"--loop-runs {args.loop_runs} --samples {args.samples} --write` "
            f"on {today} ({machine}), {args.rounds} rounds each, alternating.\n\n" + "\n".join(rows) + "\n") + after
        doc.write_text(text)
        print(f"wrote {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
