"""Benchmark: papermill's own test notebooks through bare `papermill`, `papermill --engine cd4ml`
and `cd4ml-nb run NB OUT`, alternating, several rounds, in one temporary git repository.

Prints, per door, the median wall time of the whole corpus and its ratio to bare papermill.

    python bench/bench_papermill_door.py --rounds 3
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# (notebook, papermill's arguments): the cases both doors execute (tests/test_papermill_door.py)
CORPUS = [("simple_execute.ipynb", ["-p", "msg", '"Hello"']), ("broken1.ipynb", []),
          ("line_magic_error.ipynb", []), ("sysexit0.ipynb", []), ("sysexit1.ipynb", []),
          ("report_mode_test.ipynb", ["-p", "a", "0", "--report-mode"])]
DOORS = {
    "papermill": lambda nb, args: [sys.executable, "-m", "papermill", nb, "out.ipynb", "--no-progress-bar", *args],
    "papermill --engine cd4ml": lambda nb, args: [sys.executable, "-m", "papermill", nb, "out.ipynb",
                                                  "--no-progress-bar", "--engine", "cd4ml", *args],
    "cd4ml-nb run NB OUT": lambda nb, args: [sys.executable, "-m", "cd4ml_nb.cli", "run", nb, "out.ipynb",
                                             "--no-progress-bar", "--no-html", "-q", *args],
}


def corpus_time(repo: Path, door: str) -> float:
    """Seconds to run the whole corpus through ``door``."""
    start = time.perf_counter()
    for nb, args in CORPUS:
        subprocess.run(DOORS[door](nb, args), cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import papermill

    notebooks = Path(papermill.__file__).parent / "tests" / "notebooks"
    with tempfile.TemporaryDirectory() as work:
        repo = Path(work) / "repo"
        repo.mkdir()
        for nb, _ in CORPUS:
            shutil.copy(notebooks / nb, repo / nb)
        for git in (["init", "-q", "-b", "master"], ["config", "user.email", "b@b"], ["config", "user.name", "b"],
                    ["add", "-A"], ["commit", "-q", "-m", "bench"]):
            subprocess.run(["git", *git], cwd=repo, check=True)
        corpus_time(repo, "cd4ml-nb run NB OUT")  # creates the store once, outside the timings
        times: dict[str, list[float]] = {door: [] for door in DOORS}
        for _ in range(args.rounds):
            for door in DOORS:
                times[door].append(corpus_time(repo, door))
    base = statistics.median(times["papermill"])
    print(f"{len(CORPUS)} notebooks of papermill's corpus, {args.rounds} rounds, median wall time per corpus:")
    for door, seconds in times.items():
        median = statistics.median(seconds)
        print(f"  {door:28s} {median:7.2f} s   ratio {median / base:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
