"""Benchmarks of the server extension.

1. What loading the extension adds to `jupyter server` start-up: the import and registration of
   ``cd4ml_nb`` measured in-process after jupyter_server itself is loaded (median of fresh
   processes), and the wall time to a ready server with and without the extension (alternating).
2. ``GET /cd4ml-nb/runs``'s first page on a store holding 10,000 runs (the core call behind it).

    python bench/bench_server.py [--rounds 5] [--runs 10000] [--write]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LOAD_PROBE = """
import time
import jupyter_server.serverapp, jupyter_server.base.handlers, tornado.web  # the server's own cost
from jupyter_server.auth.decorator import authorized  # noqa
start = time.perf_counter()
import cd4ml_nb
from cd4ml_nb.routes import setup_route_handlers
class App:  # the parts of ServerApp the extension touches
    root_dir = {root!r}
    class log:
        info = warning = staticmethod(lambda *a: None)
    web_app = tornado.web.Application(base_url="/")
setup_route_handlers(App)
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


def bench_runs(count: int, root: Path) -> dict:
    from mlflow.entities import Metric, Param, RunTag

    from cd4ml_nb import tracking
    from cd4ml_nb.project import Project

    project = Project.discover(root)
    c = tracking.client(project)
    exp = tracking.ensure_experiment(c, project, "master")
    fill = time.perf_counter()
    for i in range(count):
        run = c.create_run(exp, tags={tracking.NOTEBOOK: f"nb{i % 10}.ipynb"})
        c.log_batch(run.info.run_id, metrics=[Metric("score", i / count, 0, 0)],
                    params=[Param("max_depth", str(i % 12))], tags=[RunTag("cd4ml.bench", "1")])
        c.set_terminated(run.info.run_id, "FINISHED")
    fill = time.perf_counter() - fill
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--write", action="store_true", help="append the results to docs/performance.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        subprocess.run(["git", "init", "-q", "-b", "master", str(root)], check=True)
        load = bench_load(args.rounds, root)
        print(json.dumps(load), flush=True)
        runs = bench_runs(args.runs, root)
        print(json.dumps(runs), flush=True)
    rows = [
        "| measure | median | target |",
        "|---|---|---|",
        f"| import + registration of `cd4ml_nb` in a loaded server | {load['load_ms']:.0f} ms | ≤ 100 ms |",
        f"| `jupyter server` ready, extension enabled | {load['with_s']:.2f} s | |",
        f"| `jupyter server` ready, extension disabled | {load['without_s']:.2f} s | |",
        f"| `GET runs` first page (50) of {runs['runs']:,} runs | {runs['first_page_ms']:.0f} ms | ≤ 500 ms |",
        f"| same, filtered to one notebook | {runs['first_page_filtered_ms']:.0f} ms | ≤ 500 ms |",
    ]
    print("\n".join(rows))
    if args.write:
        machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        doc = ROOT / "docs" / "performance.md"
        text = doc.read_text() if doc.exists() else "# Performance\n"
        marker = "\n## Server extension\n"
        text = text.split(marker)[0].rstrip("\n") + "\n" + marker + (
            f"\nGenerated by `python bench/bench_server.py --rounds {args.rounds} --runs {args.runs} --write` "
            f"on {today} ({machine}), {args.rounds} rounds each, alternating.\n\n" + "\n".join(rows) + "\n")
        doc.write_text(text)
        print(f"wrote {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
