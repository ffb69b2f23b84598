"""`status` and a job cancel while thousands of listings are in flight (#27).

A real `jupyter server` with the extension, on a project whose store holds ``--runs`` runs; then
``--listings`` concurrent ``GET /cd4ml-nb/runs`` (one connection each, all at once) and, while they
are in flight, back to back: ``GET /cd4ml-nb/status``, ``DELETE /cd4ml-nb/jobs/<unknown>`` (404) and
Jupyter's own ``GET /api/status``. Prints their latency (median, p95) idle and during the flood, the
flood's length and its answers by status (no 5xx allowed), and with ``--write`` puts the table in
docs/performance.md.

    python bench/bench_status_flood.py [--listings 2000] [--runs 20] [--samples 30] [--write]

:class:`Flood` is also what ``tests/test_security_http.py`` floods the server with.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## `status` and cancel during a listing flood (#27)"
UNKNOWN_JOB = "0123456789ab"


class Flood:
    """``count`` concurrent ``GET /cd4ml-nb/runs?<query>`` on their own connections, sent by an asyncio
    loop in a thread; :attr:`sent` and :attr:`answered` count them as they go (under :attr:`changed`)."""

    def __init__(self, port: int, token: str, count: int, query: str = "max_results=50") -> None:
        self.port, self.count = port, count
        self.request = (f"GET /cd4ml-nb/runs?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                        f"Authorization: token {token}\r\nConnection: close\r\n\r\n").encode()
        self.sent = 0
        self.answered = 0
        self.statuses: dict[int, int] = {}
        self.failures: list[str] = []
        self.changed = threading.Condition()
        self.started_at = self.ended_at = 0.0
        self._thread = threading.Thread(target=lambda: asyncio.run(self._all()), daemon=True)

    def start(self) -> "Flood":
        self.started_at = time.perf_counter()
        self._thread.start()
        return self

    def wait(self, predicate, timeout: float = 600) -> bool:
        """Block until ``predicate(self)`` holds (checked on every change); False on timeout."""
        with self.changed:
            return self.changed.wait_for(lambda: predicate(self), timeout=timeout)

    def join(self, timeout: float = 900) -> None:
        self._thread.join(timeout)

    @property
    def done(self) -> bool:
        return self.answered + len(self.failures) >= self.count

    @property
    def in_flight(self) -> int:
        return self.sent - self.answered

    def _note(self, status: int | None = None, failure: str | None = None, sent: bool = False) -> None:
        with self.changed:
            if sent:
                self.sent += 1
            if status is not None:
                self.answered += 1
                self.statuses[status] = self.statuses.get(status, 0) + 1
            if failure is not None:
                self.failures.append(failure)
            if self.done:
                self.ended_at = time.perf_counter()
            self.changed.notify_all()

    async def _one(self) -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            writer.write(self.request)
            await writer.drain()
            self._note(sent=True)
            reply = await reader.read()
            writer.close()
        except OSError as e:
            self._note(failure=repr(e))
            return
        head = reply.split(b"\r\n", 1)[0].split()
        if len(head) < 2 or not head[1].isdigit():
            self._note(failure=f"no HTTP status line: {reply[:80]!r}")
            return
        self._note(status=int(head[1]))

    async def _all(self) -> None:
        await asyncio.gather(*(asyncio.wait_for(self._one(), 900) for _ in range(self.count)))


class Client:
    """One keep-alive connection to the server, opened before the flood: what it measures is the
    server's answer, not a connect that a burst of 2,000 others overflowed the listen backlog with
    (its dropped SYN is retried after 1, 3, 7 ... s)."""

    def __init__(self, port: int, token: str) -> None:
        import http.client

        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        self.headers = {"Authorization": f"token {token}"}

    def call(self, method: str, path: str) -> tuple[float, int, bytes]:
        """Seconds one request took, its status and its body."""
        start = time.perf_counter()
        self.connection.request(method, path, headers=self.headers)
        response = self.connection.getresponse()
        body = response.read()
        return time.perf_counter() - start, response.status, body

    def close(self) -> None:
        self.connection.close()


def call_seconds(url: str, token: str, method: str = "GET") -> tuple[float, int]:
    """Seconds one request took, and its status."""
    request = urllib.request.Request(url, method=method, headers={"Authorization": f"token {token}"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as e:
        e.read()
        status = e.code
    return time.perf_counter() - start, status


def fill_store(root: Path, count: int) -> None:
    """``count`` finished runs with a metric and a parameter in the branch's experiment."""
    from cd4ml_nb import tracking
    from cd4ml_nb.project import Project

    project = Project.discover(root)
    c = tracking.client(project)
    experiment = tracking.ensure_experiment(c, project, "master")
    for i in range(count):
        run = c.create_run(experiment, tags={tracking.NOTEBOOK: "score.ipynb"})
        c.log_metric(run.info.run_id, "score", i / max(count, 1))
        c.log_param(run.info.run_id, "max_depth", str(i % 12))
        c.set_terminated(run.info.run_id, "FINISHED")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server(root: Path, token: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen([sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root", f"--port={port}",
                             "--ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while True:
        try:
            call_seconds(f"{base}api/status", token)
            return proc, base
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.terminate()
                raise
            time.sleep(0.1)  # polling a starting server, not synchronising a test


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 2 else values[0]


def _round(client: Client, urls: dict[str, tuple[str, str]], into: dict[str, list[float]]) -> None:
    for name, (method, path) in urls.items():
        seconds, status, body = client.call(method, path)
        expected = 404 if name == "cancel" else 200
        assert status == expected, (name, status, body[:200])
        into[name].append(seconds)


def measure(listings: int, runs: int, samples: int) -> dict:
    """Latencies idle and during the flood, and the flood's outcome."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "project"
        subprocess.run(["git", "init", "-q", "-b", "master", str(root)], check=True)
        fill_store(root, runs)
        token = "bench-flood"
        proc, base = _server(root, token)
        port = int(base.rstrip("/").rsplit(":", 1)[1])
        client = Client(port, token)
        try:
            urls = {"status": ("GET", "/cd4ml-nb/status"), "cancel": ("DELETE", f"/cd4ml-nb/jobs/{UNKNOWN_JOB}"),
                    "api_status": ("GET", "/api/status")}
            page, _ = call_seconds(f"{base}cd4ml-nb/runs?max_results=50", token)  # opens the store
            page, _ = call_seconds(f"{base}cd4ml-nb/runs?max_results=50", token)
            idle: dict[str, list[float]] = {name: [] for name in urls}
            for _ in range(samples):
                _round(client, urls, idle)
            flood = Flood(port, token, listings).start()
            flood.wait(lambda f: f.sent >= listings or f.done)
            in_flight_before = flood.in_flight
            busy: dict[str, list[float]] = {name: [] for name in urls}
            while not flood.done and len(busy["status"]) < samples:
                _round(client, urls, busy)
            in_flight_after = flood.in_flight
            flood.wait(lambda f: f.done, timeout=900)
            flood.join()
        finally:
            client.close()
            proc.terminate()
            proc.wait(timeout=60)
    out = {"listings": listings, "runs": runs, "listing_alone_ms": page * 1000,
           "flood_s": flood.ended_at - flood.started_at, "statuses": flood.statuses,
           "failures": len(flood.failures), "samples_busy": len(busy["status"]), "in_flight_before": in_flight_before,
           "in_flight_after": in_flight_after}
    for name in urls:
        out[f"{name}_idle_median_ms"] = statistics.median(idle[name]) * 1000
        out[f"{name}_idle_p95_ms"] = _p95(idle[name]) * 1000
        if busy[name]:
            out[f"{name}_busy_median_ms"] = statistics.median(busy[name]) * 1000
            out[f"{name}_busy_p95_ms"] = _p95(busy[name]) * 1000
            out[f"{name}_busy_max_ms"] = max(busy[name]) * 1000
    return out


def table(r: dict) -> list[str]:
    rows = ["| request | idle: median (p95) | during the flood: median (p95), max | target |", "|---|---|---|---|"]
    names = {"status": "`GET /cd4ml-nb/status`", "cancel": "`DELETE /cd4ml-nb/jobs/<unknown>` (404)",
             "api_status": "Jupyter's `GET /api/status`"}
    for key, label in names.items():
        busy = (f"{r[f'{key}_busy_median_ms']:.0f} ms ({r[f'{key}_busy_p95_ms']:.0f} ms), "
                f"{r[f'{key}_busy_max_ms']:.0f} ms") if f"{key}_busy_median_ms" in r else "(flood ended first)"
        target = "≤ 2 s" if key != "api_status" else ""
        rows.append(f"| {label} | {r[f'{key}_idle_median_ms']:.0f} ms ({r[f'{key}_idle_p95_ms']:.0f} ms) | {busy} "
                    f"| {target} |")
    answers = ", ".join(f"{n} × {code}" for code, n in sorted(r["statuses"].items()))
    rows.append(f"| the flood: {r['listings']:,} concurrent `GET /cd4ml-nb/runs?max_results=50` of {r['runs']} runs "
                f"| one alone: {r['listing_alone_ms']:.0f} ms | all answered in {r['flood_s']:.1f} s: {answers}; "
                f"{r['failures']} failed | 0 × 5xx |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listings", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=20, help="runs in the store the listings page through")
    parser.add_argument("--samples", type=int, default=30, help="rounds of the three requests, idle and busy")
    parser.add_argument("--write", action="store_true", help="put the table in docs/performance.md")
    args = parser.parse_args()
    result = measure(args.listings, args.runs, args.samples)
    print(json.dumps(result), flush=True)
    rows = table(result)
    print("\n".join(rows))
    if args.write:
        from performance_doc import write_section

        from performance_doc import machine_and_day

        machine, today = machine_and_day()
        body = (f"{SECTION}\n\nGenerated by `python bench/bench_status_flood.py --listings {args.listings} --runs "
                f"{args.runs} --samples {args.samples} --write` on {today} ({machine}). The cheap routes (`status`, "
                "a job's state and its cancel, a pair's state) have their own thread pool, and a route holds at "
                "most all of its pool's threads but one, so the listings queue among themselves. Before (#27): "
                "one pool of 4 threads for every route, `status` took 36 s under the same flood. Measured on one "
                "keep-alive connection opened before the flood, once every listing was sent: a new connection's "
                "SYN may be dropped by the overflowing listen backlog (128) and retried after 1, 3, 7 s, which "
                "times TCP, not the route. A shared machine: quote ratios.\n\n"
                + "\n".join(rows) + "\n")
        write_section(SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
