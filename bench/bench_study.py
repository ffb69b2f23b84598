"""Benchmark (issue #25): trials per minute of a 16-trial TPE study ÷ a 16-trial random sweep.

Same trivial notebook (a shifted quadratic that logs one metric), same machine, same store,
alternating which goes first each round; prints the medians and the ratio (goal: >= 0.9, the
sampler costs nothing next to a kernel).

    python bench/bench_study.py [--rounds 2] [--parallel 2] [--trials 16]

Measured 2026-12-07 on the shared 2-core machine (--parallel 2, 2 rounds each): ratio 0.89
(TPE 45.9 s, 40.7 s; random 38.8 s, 38.2 s), and 0.81 in an earlier run under heavier load
(TPE 75.8 s, 106.1 s; random 73.0 s, 74.3 s): the 0.9 goal is not shown yet. Fixed cost: Optuna's
storage opens in 0.47 s; per trial the driver writes ask, tell, a user attribute and the state tag
between a trial's end and the next start.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

SPACE = "{x: {uniform: [-10, 10]}, y: {uniform: [-10, 10]}}"


def main() -> int:
    from nbfactory import commit_all, init_repo, percent, write_ipynb

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--trials", type=int, default=16)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    with tempfile.TemporaryDirectory() as tmp:
        repo = init_repo(Path(tmp) / "repo", branch="bench")
        write_ipynb(repo / "quad.ipynb", percent("import mlflow\nmlflow.log_metric('loss', (x - 3.3) ** 2 + (y + 1.7) ** 2)",
                                                 parameters="x: float = 0.0\ny: float = 0.0"))
        (repo / "tpe.yaml").write_text(f"search: {{method: tpe, n: {args.trials}, seed: 0, space: {SPACE}}}\n"
                                       "metric: loss\ngoal: minimize\n")
        (repo / "random.yaml").write_text(f"random: {{n: {args.trials}, seed: 0, space: {SPACE}}}\n"
                                          "metric: loss\ngoal: minimize\n")
        commit_all(repo)
        subprocess.run(["cd4ml-nb", "run", "quad.ipynb", "-q"], cwd=repo, env=env, check=True,
                       capture_output=True)  # warm-up, creates the store

        def sweep(name: str) -> float:
            start = time.perf_counter()
            done = subprocess.run(["cd4ml-nb", "sweep", "quad.ipynb", "-f", f"{name}.yaml", "--parallel",
                                   str(args.parallel), "-q"], cwd=repo, env=env, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr[-2000:]
            return time.perf_counter() - start

        times: dict[str, list[float]] = {"tpe": [], "random": []}
        for r in range(args.rounds):
            for name in (("tpe", "random") if r % 2 == 0 else ("random", "tpe")):
                times[name].append(sweep(name))
    rate = {name: args.trials / statistics.median(t) * 60 for name, t in times.items()}
    print(json.dumps({"trials": args.trials, "parallel": args.parallel, "rounds": args.rounds,
                      "seconds": times, "trials_per_minute": rate,
                      "ratio_tpe_over_random": rate["tpe"] / rate["random"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
