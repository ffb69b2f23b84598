"""Browser tests: real JupyterLab, real Chromium, the cd4ml status-bar item and Experiments panel.

Starts ``jupyter lab`` (token auth, 127.0.0.1, free port) in a temporary git repository
and drives Debian's ``chromium`` through Playwright with ``executable_path``: no browser
is downloaded, so never run ``playwright install``. ``.ci/run`` installs both.

The walk through the panel and the Experiments dashboard (run, cancel, compare, filter, chart)
is in test_browser_dashboard.py; this file holds the shared set-up and the status-bar checks.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from nbfactory import free_port, jupyter_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
START_TIMEOUT_S = 120
UI_TIMEOUT_MS = 120_000
JOB_TIMEOUT_MS = 120_000
STATUS_ITEM = "#cd4ml-nb-status"
PANEL_TAB = '.jp-SideBar .lm-TabBar-tab[data-id="cd4ml-nb-experiments"]'
EXAMPLE = Path(__file__).resolve().parents[1] / "notebooks"


def _skip_reason() -> str | None:
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} not found (Debian: apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install playwright)"
    try:
        importlib.metadata.version("cd4ml_nb")
    except importlib.metadata.PackageNotFoundError:
        return "cd4ml_nb is not installed as a package, so no labextension is built (pip install .)"
    if shutil.which("git") is None:
        return "git not found"
    return None


_reason = _skip_reason()
pytestmark = pytest.mark.skipif(_reason is not None, reason=_reason or "")


@dataclass(frozen=True)
class Lab:
    url: str
    token: str
    repo: Path
    log: Path
    pid: int = 0  # of the `jupyter lab` process

    def log_tail(self, chars: int = 6000) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-chars:]


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=cd4ml test", "-c", "user.email=cd4ml@example.invalid", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def _make_repo(repo: Path, branch: str, prepare: Callable[[Path], None] | None = None) -> None:
    repo.mkdir()
    _git(repo, "init", "--quiet", "-b", "main")
    (repo / "README.md").write_text("# experiment\n", encoding="utf-8")
    _git(repo, "add", "README.md")
    _git(repo, "commit", "--quiet", "-m", "start")
    if prepare is not None:
        prepare(repo)
    _git(repo, "checkout", "--quiet", "-b", branch)


def _get_json(url: str, token: str, timeout: float = 10) -> tuple[int, object]:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8", "replace")


@contextmanager
def running_lab(
    tmp_path: Path, branch: str, prepare: Callable[[Path], None] | None = None
) -> Iterator[Lab]:
    """A ``jupyter lab`` serving a fresh git repository checked out on ``branch``.

    ``prepare(repo)`` runs after the first commit on ``main``, before the branch is made
    and the server starts.
    """
    repo = tmp_path / "repo"
    _make_repo(repo, branch, prepare)
    home = tmp_path / "jupyter"
    env = dict(os.environ)
    # The embedded store of the repository, whatever the calling shell points MLflow at.
    env.pop("MLFLOW_TRACKING_URI", None)
    # Keep the user's own Jupyter config, settings and workspaces out of the test;
    # the installed cd4ml_nb config under sys.prefix still applies.
    env.update(
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_DATA_DIR=str(home / "data"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        JUPYTER_PLATFORM_DIRS="0",
        JUPYTERLAB_SETTINGS_DIR=str(home / "lab-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(home / "lab-workspaces"),
    )
    # No "would you like to get news?" toast over the page.
    notification = home / "lab-settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True, exist_ok=True)
    notification.write_text(json.dumps({"fetchNews": "false"}), encoding="utf-8")
    token = secrets.token_hex(24)
    port = free_port()
    log = tmp_path / "jupyter-lab.log"
    command = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser", "--allow-root",
        f"--ServerApp.token={token}",
        f"--port={port}",  # if taken meanwhile, Lab moves on: the port it got is read back below
        "--ip=127.0.0.1",
        f"--ServerApp.root_dir={repo}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            command, cwd=repo, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        try:
            port = jupyter_port(home / "runtime", process, START_TIMEOUT_S)
        except AssertionError as error:
            pytest.fail(f"{error}:\n{Lab('', token, repo, log).log_tail()}")
        lab = Lab(url=f"http://127.0.0.1:{port}", token=token, repo=repo, log=log, pid=process.pid)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"jupyter lab exited with {process.returncode}:\n{lab.log_tail()}")
            try:
                status, _ = _get_json(f"{lab.url}/api/status", token)
            except OSError:
                status = None
            if status == 200:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter lab not ready after {START_TIMEOUT_S}s:\n{lab.log_tail()}")
            time.sleep(0.5)
        yield lab
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


@pytest.fixture
def browser():
    # Function scope on purpose: sync Playwright marks an asyncio loop as running in this
    # thread while it is open, and pytest-jupyter's autouse per-test loop fixture must not
    # see it at teardown ("Cannot close a running event loop").
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@contextmanager
def open_lab(browser, lab: Lab, path: str = "", viewport: dict | None = None):
    """A page showing JupyterLab (with ``path`` open); on failure the console and server log are reported."""
    context = browser.new_context(viewport=viewport) if viewport else browser.new_context()
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(f"[{message.type}] {message.text}"))
    page.on("pageerror", lambda error: console.append(f"[pageerror] {error}"))
    try:
        tree = f"/tree/{path}" if path else ""
        page.goto(f"{lab.url}/lab{tree}?token={lab.token}", wait_until="domcontentloaded")
        yield page
    except Exception as error:
        raise AssertionError(
            f"{error}\n--- browser console ---\n" + "\n".join(console[-60:])
            + f"\n--- jupyter lab log ---\n{lab.log_tail()}"
        ) from error
    finally:
        context.close()


def run_from_palette(page, label: str) -> None:
    """Run a command by its palette label, once the Lab has restored its layout (its splash gone): a
    key pressed earlier can be lost, or the palette closed again by the restore activating a widget."""
    from playwright.sync_api import expect

    expect(page.locator(".jp-LabShell")).to_be_visible(timeout=UI_TIMEOUT_MS)
    expect(page.locator("#jupyterlab-splash")).to_have_count(0, timeout=UI_TIMEOUT_MS)
    page.keyboard.press("Control+Shift+C")
    palette = page.locator(".lm-CommandPalette-input")
    expect(palette).to_be_visible(timeout=UI_TIMEOUT_MS)
    palette.fill(label)
    page.locator(".lm-CommandPalette-item", has_text=label).first.click()


def test_status_bar_shows_the_git_branch(browser, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    branch = "try-random-forest"
    with running_lab(tmp_path, branch) as lab:
        # The server side first: a failure here is not a frontend problem.
        status, body = _get_json(f"{lab.url}/cd4ml-nb/status", lab.token)
        assert status == 200, f"GET /cd4ml-nb/status -> {status}: {body}\n{lab.log_tail()}"
        assert isinstance(body, dict) and body["branch"] == branch, body

        with open_lab(browser, lab) as page:
            item = page.locator(STATUS_ITEM)
            expect(item).to_contain_text(f"cd4ml: {branch}", timeout=UI_TIMEOUT_MS)
            title = item.get_attribute("title") or ""
            assert f"Base branch: {body['base_branch']}" in title, title
            assert f"Tracking URI: {body['tracking_uri']}" in title, title


def test_branch_name_is_rendered_as_text_not_html(browser, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    # A legal git branch name that is also markup: an <img> with an onerror handler.
    branch = "<img/src/onerror=window.__cd4mlInjected=1>"
    with running_lab(tmp_path, branch) as lab:
        with open_lab(browser, lab) as page:
            item = page.locator(STATUS_ITEM)
            expect(item).to_contain_text(f"cd4ml: {branch}", timeout=UI_TIMEOUT_MS)
            assert item.locator("img").count() == 0
            assert page.evaluate("() => window.__cd4mlInjected === undefined")


# --- the Experiments panel: run the example notebook as a branch experiment ----------------


def _add_example(repo: Path) -> None:
    """Commit a copy of the example notebooks on ``main`` and run it once there (the base run)."""
    shutil.copytree(
        EXAMPLE,
        repo / "notebooks",
        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", ".cd4ml", "*.pyc"),
    )
    _git(repo, "add", "notebooks")
    _git(repo, "commit", "--quiet", "-m", "example notebook")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run(
        [sys.executable, "-m", "cd4ml_nb.cli", "run", "notebooks/train.ipynb",
         "-f", "notebooks/smoke.yaml", "-q"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, f"base run on main failed:\n{done.stdout}\n{done.stderr}"
