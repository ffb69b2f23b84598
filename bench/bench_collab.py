"""Pairs under real-time collaboration (#28): how long a pulled .py takes to reach a headless client
and the .ipynb, and an edit to reach both files. Needs jupyter-collaboration (cd4ml-nb[collab]).

    python bench/bench_collab.py [repeats]
"""
from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from collab_client import Server, client, edit_cell, sources, until  # noqa: E402
from nbfactory import commit_all, init_repo, percent, write_ipynb  # noqa: E402


def make_pair(root: Path, name: str) -> str:
    from cd4ml_nb import pairing
    from cd4ml_nb.project import Project

    folder = init_repo(root / name)
    write_ipynb(folder / "nb.ipynb", percent("a = 1", "b = 2", "c = 3"))
    pairing.pair_notebook(folder / "nb.ipynb", Project.discover(folder))
    commit_all(folder, "paired")
    return f"{name}/nb.ipynb"


async def one(server: Server, path: str, n: int) -> tuple[float, float, float]:
    folder = server.root / Path(path).parent
    async with client(server, path) as nb:
        start = time.monotonic()
        edit_cell(nb, 0, f"a = {n}")
        await until(lambda: f"a = {n}" in (folder / "nb.py").read_text() and
                    f"a = {n}" in (folder / "nb.ipynb").read_text(), "edit saved", 60)
        edit_s = time.monotonic() - start
        text = (folder / "nb.py").read_text().replace("b = 2", f"b = {n}")
        start = time.monotonic()
        (folder / "nb.py").write_text(text)
        await until(lambda: sources(nb)[1] == f"b = {n}", "pull in client", 60)
        client_s = time.monotonic() - start
        await until(lambda: f"b = {n}" in (folder / "nb.ipynb").read_text(), "pull in ipynb", 60)
        return edit_s, client_s, time.monotonic() - start


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    root = Path(tempfile.mkdtemp(prefix="bench-collab-"))
    server = Server(root)
    try:
        rows = [asyncio.run(one(server, make_pair(root, f"p{n}"), n)) for n in range(repeats)]
    finally:
        server.stop()
    for label, values in zip(("edit → both files", "pulled .py → client", "pulled .py → .ipynb"), zip(*rows)):
        print(f"{label:22} median {statistics.median(values):.2f} s, max {max(values):.2f} s (n={repeats})")


if __name__ == "__main__":
    main()
