"""Browser walk at JupyterLab's default layout (1440×900, sidebar 250 px), light and dark theme.

Real ``jupyter lab`` and Debian's Chromium (see test_browser.py): run the example notebook from
the panel (an invalid value first), open the executed copy, cancel a second run, then open the
Experiments dashboard by its command and filter, chart, compare two runs of two branches and open
an HTML render. The browser console must stay free of errors. With ``CD4ML_SCREENSHOT_DIR`` set,
a screenshot of each step is left there (``<step>.png``, ``<step>-dark.png``).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from test_browser import (  # noqa: F401  (browser: the fixture)
    run_from_palette,
    JOB_TIMEOUT_MS, PANEL_TAB, START_TIMEOUT_S, UI_TIMEOUT_MS, _add_example, _get_json, _git, browser, open_lab,
    pytestmark, running_lab,
)

VIEWPORT = {"width": 1440, "height": 900}
BRANCH = "try-random-forest"
NOTEBOOK = "notebooks/train.ipynb"
FEEDBACK_MS = 1000  # "cancelling…" must show within a second of the click


def _shot(page, tmp_path: Path, name: str, theme: str) -> None:
    name = f"{name}{'-dark' if theme == 'dark' else ''}.png"
    page.screenshot(path=str(tmp_path / name))
    target = os.environ.get("CD4ML_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / name, Path(target) / name)


def _set_theme(tmp_path: Path, theme: str) -> None:
    """Lab's theme setting, written where running_lab points JUPYTERLAB_SETTINGS_DIR."""
    settings = tmp_path / "jupyter" / "lab-settings" / "@jupyterlab" / "apputils-extension" / "themes.jupyterlab-settings"
    settings.parent.mkdir(parents=True, exist_ok=True)
    name = "JupyterLab Dark" if theme == "dark" else "JupyterLab Light"
    settings.write_text(json.dumps({"theme": name}), encoding="utf-8")


def _errors(console: list[str]) -> list[str]:
    return [line for line in console if line.startswith(("[error]", "[pageerror]"))]


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_experiments_walk(browser, tmp_path: Path, theme: str) -> None:
    from playwright.sync_api import expect

    _set_theme(tmp_path, theme)
    with running_lab(tmp_path, BRANCH, prepare=_add_example) as lab, \
            open_lab(browser, lab, path=NOTEBOOK, viewport=VIEWPORT) as page:
        console: list[str] = []
        page.on("console", lambda m: console.append(f"[{m.type}] {m.text}"))
        page.on("pageerror", lambda e: console.append(f"[pageerror] {e}"))
        expect(page.locator(".jp-NotebookPanel")).to_be_visible(timeout=UI_TIMEOUT_MS)
        expect(page.locator("body")).to_have_attribute("data-jp-theme-light", "false" if theme == "dark" else "true",
                                                       timeout=UI_TIMEOUT_MS)
        # The example notebook opens as JupyterLab saves it: nothing to save.
        tab = page.locator(f'.lm-DockPanel-tabBar .lm-TabBar-tab[title*="{NOTEBOOK.split("/")[-1]}"]').first
        expect(tab).to_be_visible(timeout=UI_TIMEOUT_MS)
        page.wait_for_function(
            "() => !!document.querySelector('.jp-NotebookPanel .jp-Cell')", timeout=UI_TIMEOUT_MS)
        expect(tab).not_to_have_class(re.compile(r"jp-mod-dirty"))

        # --- panel: an invalid value disables Run, the reason beside the button, in view ----------
        page.locator(PANEL_TAB).click()
        panel = page.get_by_test_id("cd4ml-experiments-panel")
        expect(panel.get_by_test_id("cd4ml-branch")).to_have_text(BRANCH, timeout=UI_TIMEOUT_MS)
        box = panel.bounding_box()
        assert box and box["width"] < 300, f"the sidebar is at its default width, not {box}"
        max_depth = panel.get_by_test_id("cd4ml-param-max_depth")
        expect(max_depth).to_have_value("8", timeout=UI_TIMEOUT_MS)
        run_button = panel.get_by_test_id("cd4ml-run-button")
        blocked = panel.get_by_test_id("cd4ml-run-blocked")
        max_depth.fill("three")
        expect(run_button).to_be_disabled()
        expect(blocked).to_contain_text("max_depth")
        expect(blocked).to_contain_text("whole number")
        expect(blocked).to_be_in_viewport()
        expect(run_button).to_be_in_viewport()
        _shot(page, tmp_path, "panel-invalid-value", theme)
        max_depth.fill("5")
        expect(blocked).to_be_hidden()
        expect(run_button).to_be_enabled()

        # --- run from the panel -----------------------------------------------------------------
        run_button.click()
        state = panel.get_by_test_id("cd4ml-job-state")
        expect(state).to_have_attribute("data-state", re.compile("^(finished|failed|killed)$"), timeout=JOB_TIMEOUT_MS)
        assert state.text_content() == "finished", panel.get_by_test_id("cd4ml-job-error").text_content()
        progress = panel.get_by_test_id("cd4ml-progress")
        total = progress.get_attribute("data-total")
        assert total and int(total) > 0 and progress.get_attribute("data-done") == total
        expect(panel.get_by_test_id("cd4ml-job-params")).to_have_text("Parameters: max_depth=5")
        run_id = panel.get_by_test_id("cd4ml-job-run-id").text_content()
        assert run_id

        # --- the executed copy: titled after its run, no form, no pairing -----------------------
        panel.get_by_test_id("cd4ml-open-executed").click()
        executed_tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text=f"train · {run_id[:8]}")
        expect(executed_tab).to_have_count(1, timeout=UI_TIMEOUT_MS)
        expect(panel.get_by_test_id("cd4ml-executed-copy")).to_be_visible(timeout=UI_TIMEOUT_MS)
        expect(panel.get_by_test_id("cd4ml-param-max_depth")).to_be_hidden()
        expect(panel.get_by_test_id("cd4ml-pairing")).to_be_hidden()
        expect(panel.get_by_test_id("cd4ml-pair-button")).to_be_hidden()
        expect(run_button).to_be_hidden()
        _shot(page, tmp_path, "executed-notebook", theme)
        page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text=re.compile(r"^train\.ipynb$")).click()
        expect(panel.get_by_test_id("cd4ml-notebook-path")).to_have_text(NOTEBOOK, timeout=UI_TIMEOUT_MS)

        # --- cancel: "cancelling…" at once, then "cancelled" ------------------------------------
        # The DELETE is held until "cancelling…" has been seen: a server that answers in a few
        # milliseconds would otherwise let the panel pass straight to "cancelled" between two looks.
        held: list = []
        job_url = re.compile(r".*/cd4ml-nb/jobs/[^/?]+(\?.*)?$")
        page.route(job_url, lambda route: held.append(route) if route.request.method == "DELETE"
                   else route.continue_())
        expect(run_button).to_be_enabled(timeout=UI_TIMEOUT_MS)
        run_button.click()
        cancel = panel.get_by_test_id("cd4ml-cancel-button")
        expect(cancel).to_be_visible(timeout=UI_TIMEOUT_MS)
        with page.expect_request(lambda r: r.method == "DELETE" and "/cd4ml-nb/jobs/" in r.url,
                                 timeout=UI_TIMEOUT_MS):
            cancel.click()
        expect(state).to_have_text("cancelling…", timeout=FEEDBACK_MS)
        _shot(page, tmp_path, "panel-cancelling", theme)
        for _ in range(600):  # Playwright calls route handlers only while it is waiting
            if held:
                break
            page.wait_for_timeout(100)
        assert held, "the panel's DELETE never reached the route"
        held[0].continue_()
        page.unroute(job_url)
        expect(state).to_have_text("cancelled", timeout=JOB_TIMEOUT_MS)
        expect(panel.get_by_test_id("cd4ml-job-error")).to_be_hidden()
        expect(panel).not_to_contain_text("SIGTERM")
        _shot(page, tmp_path, "panel-cancelled", theme)

        # --- the dashboard, opened by its command from the palette ------------------------------
        run_from_palette(page, "Open Experiments Dashboard")
        dashboard = page.get_by_test_id("cd4ml-dashboard")
        expect(dashboard).to_be_visible(timeout=UI_TIMEOUT_MS)
        dbox = dashboard.bounding_box()
        assert dbox and dbox["width"] > 1000, f"the dashboard uses the main area's width: {dbox}"
        table = dashboard.get_by_test_id("cd4ml-dashboard-table")
        expect(table.locator('tbody tr[data-side="base"]')).to_have_count(1, timeout=UI_TIMEOUT_MS)
        # This branch: the finished run (and the cancelled one, when it got as far as an MLflow run).
        expect(table.locator(f'tbody tr[data-side="current"][data-run-id="{run_id}"]')).to_have_count(1, timeout=UI_TIMEOUT_MS)
        expect(dashboard.get_by_test_id("cd4ml-dashboard-branches")).to_contain_text(BRANCH)
        expect(dashboard.get_by_test_id("cd4ml-dashboard-branches")).to_contain_text("main")
        row = table.locator(f'tr[data-run-id="{run_id}"]')
        expect(row.locator('td[data-param="max_depth"]')).to_have_text("5")
        branch_cell = row.locator(".cd4ml-nb-BranchCell")
        assert branch_cell.evaluate("n => n.scrollWidth <= n.clientWidth"), "the branch name is cut"
        _shot(page, tmp_path, "dashboard", theme)

        # Filter: finished runs only, then a parameter value.
        dashboard.get_by_test_id("cd4ml-filter-status").select_option("FINISHED")
        expect(table.locator("tbody tr")).to_have_count(2)
        dashboard.get_by_test_id("cd4ml-filter-parameter").fill("max_depth=5")
        expect(table.locator("tbody tr")).to_have_count(1)
        expect(table.locator("tbody tr")).to_have_attribute("data-run-id", run_id)
        _shot(page, tmp_path, "dashboard-filtered", theme)
        dashboard.get_by_test_id("cd4ml-filter-parameter").fill("")
        expect(table.locator("tbody tr")).to_have_count(2)

        # Sort by the metric: ascending, then descending.
        dashboard.get_by_test_id("cd4ml-dashboard-metric").select_option("nwrmsle")
        header = table.locator('th[data-sort-key="metric:nwrmsle"]')
        header.locator("button").click()
        expect(header).to_have_attribute("aria-sort", "ascending")
        values = [float(v) for v in table.locator('tbody td[data-metric="nwrmsle"]').all_text_contents()]
        assert values == sorted(values) and len(values) == 2, values

        # Chart: a point per finished run, a tooltip naming the run.
        chart = dashboard.get_by_test_id("cd4ml-chart-time")
        points = chart.locator("g.mark-symbol.role-mark path")
        expect(points).to_have_count(2, timeout=UI_TIMEOUT_MS)
        chart.scroll_into_view_if_needed()
        found = False
        for index in range(2):
            points.nth(index).hover(force=True)
            tooltip = page.locator("#vg-tooltip-element")
            expect(tooltip).to_be_visible(timeout=UI_TIMEOUT_MS)
            if run_id[:8] in (tooltip.text_content() or ""):
                found = True
                break
        assert found, "no chart tooltip names the run"
        expect(page.locator("#vg-tooltip-element")).to_contain_text("Branch")
        expect(dashboard.get_by_test_id("cd4ml-chart-parameter").locator("g.mark-symbol.role-mark path")).to_have_count(2)
        _shot(page, tmp_path, "dashboard-chart", theme)

        # Compare the base run and this branch's run.
        rows = table.locator("tbody tr")
        for index in range(2):
            rows.nth(index).locator('input[type="checkbox"]').check()
        dashboard.get_by_test_id("cd4ml-compare-button").click()
        comparison = dashboard.get_by_test_id("cd4ml-comparison")
        expect(comparison).to_be_visible(timeout=UI_TIMEOUT_MS)
        expect(comparison.get_by_test_id("cd4ml-params-changed").locator('tr[data-param="max_depth"]')).to_have_count(1)
        delta = comparison.locator(f'[data-testid="cd4ml-deltas"] tr[data-metric="nwrmsle"][data-run-id="{run_id}"]')
        expect(delta).to_have_count(1)
        expect(delta).to_contain_text("minimize")
        expect(comparison.get_by_test_id("cd4ml-gate")).to_contain_text("nwrmsle")
        expect(comparison.get_by_test_id("cd4ml-gate")).to_have_attribute("data-passed", re.compile("^(true|false)$"))
        comparison.scroll_into_view_if_needed()
        _shot(page, tmp_path, "dashboard-compare", theme)

        # The HTML render opens rendered, not as source.
        with page.expect_popup() as popup_info:
            comparison.get_by_test_id(f"cd4ml-open-html-{run_id}").click()
        popup = popup_info.value
        popup.wait_for_load_state()
        assert popup.evaluate("() => document.contentType") == "text/html"
        body = popup.locator("body")
        expect(body).to_contain_text("max_depth", timeout=UI_TIMEOUT_MS)
        text = body.inner_text()
        assert "<!DOCTYPE" not in text and "<div" not in text, text[:300]
        assert popup.locator("div").count() > 10
        popup.set_viewport_size(VIEWPORT)
        _shot(popup, tmp_path, "html-render", theme)
        popup.close()

        # The run in MLflow's own UI: started on demand by the server, proxied under its base URL.
        status, got = _get_json(f"{lab.url}/cd4ml-nb/mlflow/ajax-api/2.0/mlflow/runs/get?run_id={run_id}", lab.token,
                                timeout=START_TIMEOUT_S)  # the first request starts it
        assert status == 200, got
        run_name = got["run"]["info"]["run_name"]
        link = comparison.get_by_test_id(f"cd4ml-open-mlflow-{run_id}")
        expect(link).to_have_text("Open in MLflow")
        assert link.get_attribute("href").endswith(f"/cd4ml-nb/mlflow/#/experiments/{got['run']['info']['experiment_id']}"
                                                   f"/runs/{run_id}"), link.get_attribute("href")
        with page.expect_popup() as popup_info:
            link.click()
        popup = popup_info.value
        refused: list[str] = []
        writes: list[str] = []  # the UI's JSON POSTs: no XSRF token, passed as same-origin REST calls
        popup.on("response", lambda r: refused.append(f"{r.status} {r.request.method} {r.url}")
                 if r.status in (401, 403) else None)
        popup.on("response", lambda r: writes.append(r.url)
                 if r.request.method == "POST" and r.ok and "/cd4ml-nb/mlflow/" in r.url else None)
        popup.set_viewport_size(VIEWPORT)
        expect(popup.get_by_text(run_name, exact=True).first).to_be_visible(timeout=UI_TIMEOUT_MS)
        expect(popup.get_by_text(run_id, exact=True).first).to_be_visible(timeout=UI_TIMEOUT_MS)
        expect(popup.get_by_text(BRANCH, exact=True).first).to_be_visible(timeout=UI_TIMEOUT_MS)
        assert popup.url.startswith(f"{lab.url}/cd4ml-nb/mlflow/"), popup.url
        assert not refused, f"the proxy refused requests of MLflow's UI: {refused}"
        assert writes, "MLflow's UI made no POST through the proxy (its REST calls are POSTs)"
        _shot(popup, tmp_path, "mlflow-ui", theme)
        popup.close()
        servers = [p for p in psutil.Process(lab.pid).children() if {"mlflow", "server"} <= set(_cmdline(p))]
        assert len(servers) == 1, "one MLflow UI per Jupyter server"
        mlflow_tree = [servers[0], *servers[0].children(recursive=True)]

        assert not _errors(console), "browser console errors during the walk:\n" + "\n".join(_errors(console))

        # The server agrees: the run is in this branch's experiment with the value given.
        status, body = _get_json(f"{lab.url}/cd4ml-nb/runs?notebook={NOTEBOOK}", lab.token)
        assert status == 200, body
        runs = {r["run_id"]: r for r in body["runs"]}
        assert runs[run_id]["status"] == "FINISHED" and runs[run_id]["params"].get("max_depth") == "5"
        assert "RUNNING" not in {r["status"] for r in runs.values()}, runs

    # The MLflow UI the server started ended with it (SIGTERM to `jupyter lab` only, not its group).
    left = [p for p in mlflow_tree if _alive(p)]
    assert not left, f"processes left after jupyter lab stopped: {[_cmdline(p) for p in left]}"


def _cmdline(process: psutil.Process) -> list[str]:
    """Its command line; empty for a child that exited and is not reaped yet (a finished kernel)."""
    try:
        return process.cmdline()
    except (psutil.ZombieProcess, psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# --- Sync of a pair whose two sides both changed: the diff, then an explicit choice -------------


def _conflicting_pair(repo: Path) -> None:
    """A committed pair ``nb.ipynb``/``nb.py``, then both sides edited (the .py last, as an editor
    or a `git pull` leaves it): ``print(x * 2)`` in the notebook, ``print(x + 1)`` in the script."""
    from nbfactory import percent, write_ipynb

    write_ipynb(repo / "nb.ipynb", percent("x = 1", "print(x)"))
    nb = json.loads((repo / "nb.ipynb").read_text())  # as JupyterLab saves it: it opens clean
    nb["metadata"]["kernelspec"]["display_name"] = "Python 3 (ipykernel)"
    nb["metadata"]["language_info"] = {
        "codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py", "mimetype": "text/x-python",
        "name": "python", "nbconvert_exporter": "python", "pygments_lexer": "ipython3",
        "version": ".".join(map(str, sys.version_info[:3])),
    }
    (repo / "nb.ipynb").write_text(json.dumps(nb, indent=1) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run([sys.executable, "-m", "cd4ml_nb.cli", "pair", "nb.ipynb"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    _git(repo, "add", "nb.ipynb", "nb.py")
    _git(repo, "commit", "--quiet", "-m", "paired notebook")
    nb = json.loads((repo / "nb.ipynb").read_text())
    nb["cells"][1]["source"] = "print(x * 2)"
    (repo / "nb.ipynb").write_text(json.dumps(nb, indent=1) + "\n")
    py = repo / "nb.py"
    py.write_text(py.read_text().replace("print(x)", "print(x + 1)"))
    later = (repo / "nb.ipynb").stat().st_mtime + 5
    os.utime(py, (later, later))


def test_sync_keeps_the_chosen_side(browser, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    with running_lab(tmp_path, BRANCH, prepare=_conflicting_pair) as lab, \
            open_lab(browser, lab, path="nb.ipynb", viewport=VIEWPORT) as page:
        console: list[str] = []
        page.on("console", lambda m: console.append(f"[{m.type}] {m.text}"))
        page.on("pageerror", lambda e: console.append(f"[pageerror] {e}"))
        expect(page.locator(".jp-NotebookPanel")).to_be_visible(timeout=UI_TIMEOUT_MS)
        page.locator(PANEL_TAB).click()
        panel = page.get_by_test_id("cd4ml-experiments-panel")
        expect(panel.get_by_test_id("cd4ml-pairing")).to_have_attribute("data-state", "conflict", timeout=UI_TIMEOUT_MS)
        diff = panel.get_by_test_id("cd4ml-pairing-diff")
        expect(diff).to_contain_text("-print(x * 2)")
        expect(diff).to_contain_text("+print(x + 1)")
        # Jupytext shows the newer side's inputs (the .py); keeping the .ipynb must change the screen.
        cell = page.locator(".jp-NotebookPanel .jp-Cell").nth(1)
        expect(cell).to_contain_text("print(x + 1)", timeout=UI_TIMEOUT_MS)
        expect(panel.get_by_test_id("cd4ml-sync-keep-text")).to_have_text("Keep .py")
        keep_ipynb = panel.get_by_test_id("cd4ml-sync-keep-ipynb")
        expect(keep_ipynb).to_have_text("Keep .ipynb")
        expect(panel.get_by_test_id("cd4ml-sync-button")).to_have_count(0)  # no guess when both changed
        expect(keep_ipynb).to_be_enabled()
        expect(keep_ipynb).to_be_in_viewport()
        _shot(page, tmp_path, "panel-sync-conflict", "light")

        keep_ipynb.click()
        expect(panel.get_by_test_id("cd4ml-pairing")).to_have_attribute("data-state", "in-sync", timeout=UI_TIMEOUT_MS)
        expect(panel.get_by_test_id("cd4ml-sync-done")).to_contain_text("updated nb.py from nb.ipynb")
        expect(panel.get_by_test_id("cd4ml-pairing-diff")).to_have_count(0)
        # The notebook on screen shows what is on disk, with nothing left to save.
        expect(cell).to_contain_text("print(x * 2)", timeout=UI_TIMEOUT_MS)
        tab = page.locator('.lm-DockPanel-tabBar .lm-TabBar-tab[title*="nb.ipynb"]').first
        expect(tab).not_to_have_class(re.compile(r"jp-mod-dirty"))
        _shot(page, tmp_path, "panel-sync-done", "light")
        assert not _errors(console), "browser console errors:\n" + "\n".join(_errors(console))

    nb = json.loads((lab.repo / "nb.ipynb").read_text())
    assert "".join(nb["cells"][1]["source"]) == "print(x * 2)", "the .ipynb was kept"
    text = (lab.repo / "nb.py").read_text()
    assert "print(x * 2)" in text and "print(x + 1)" not in text


# --- Kinds of run: plain runs compared like with like, the others a choice away ------------------

MARKUP = '<img src=x onerror="window.__cd4mlInjected=1">'


def _runs_of_kinds(repo: Path) -> dict[str, str]:
    """A committed notebook and, recorded as the product records them, a plain run on ``main`` and
    on ``BRANCH``: a plain run, a sweep with a trial, and a plain run that FAILED at cell 2 with
    markup as its message. Returns their ids by name (written to ``runs.json`` beside the repo)."""
    import dataclasses

    from nbfactory import percent, write_ipynb

    from cd4ml_nb import gitinfo, history, tracking
    from cd4ml_nb.project import Project

    write_ipynb(repo / "nb.ipynb", percent("import mlflow", "mlflow.log_metric('loss', 1.0)"))
    _git(repo, "add", "nb.ipynb")
    _git(repo, "commit", "--quiet", "-m", "a notebook")
    project = Project.discover(repo)
    c = tracking.client(project)  # the store is created here, before Lab starts
    main = gitinfo.inspect(repo)
    branch = dataclasses.replace(main, branch=BRANCH)  # the branch the lab checks out next

    def record(git, kind: str, loss: float | None, status: str = "FINISHED", tags: dict | None = None,
               end: dict | None = None) -> str:
        experiment = tracking.ensure_experiment(c, project, tracking.experiment_name(project, git))
        run_tags = {**tracking.provenance_tags(project, git, "nb.ipynb"), history.KIND: kind, **(tags or {})}
        run_id = tracking.create_run(c, experiment, "nb.ipynb", run_tags, {"seed": 0}).info.run_id
        if loss is not None:
            c.log_metric(run_id, "loss", loss)
        tracking.end_run(c, run_id, status, end)
        return run_id

    ids = {"base": record(main, history.RUN, 1.0), "plain": record(branch, history.RUN, 0.9)}
    ids["sweep"] = record(branch, history.SWEEP, None)
    ids["trial"] = record(branch, history.TRIAL, 0.8, tags={history.PARENT: ids["sweep"]})
    ids["failed"] = record(branch, history.RUN, None, "FAILED",
                           end={tracking.REASON: "cell-exception", tracking.FAILED_CELL: "2",
                                "cd4ml.status.message": MARKUP})
    (repo.parent / "runs.json").write_text(json.dumps(ids), encoding="utf-8")
    return ids


def test_dashboard_shows_kinds_and_compares_plain_runs_by_default(browser, tmp_path: Path, monkeypatch) -> None:
    from playwright.sync_api import expect

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the repository's embedded store
    with running_lab(tmp_path, BRANCH, prepare=_runs_of_kinds) as lab, \
            open_lab(browser, lab, path="nb.ipynb", viewport=VIEWPORT) as page:
        ids = json.loads((tmp_path / "runs.json").read_text(encoding="utf-8"))
        console: list[str] = []
        page.on("console", lambda m: console.append(f"[{m.type}] {m.text}"))
        page.on("pageerror", lambda e: console.append(f"[pageerror] {e}"))
        # The server lists every kind; the dashboard chooses among them.
        status, body = _get_json(f"{lab.url}/cd4ml-nb/runs", lab.token)
        assert status == 200, body
        listed = {r["run_id"]: r for r in body["runs"]}
        assert listed[ids["trial"]]["kind"] == "trial" and listed[ids["trial"]]["parent_run_id"] == ids["sweep"]
        assert listed[ids["failed"]]["message"] == MARKUP

        # The panel lists this branch's latest runs of the notebook, newest first, with their kind.
        expect(page.locator(".jp-NotebookPanel")).to_be_visible(timeout=UI_TIMEOUT_MS)
        page.locator(PANEL_TAB).click()
        panel = page.get_by_test_id("cd4ml-experiments-panel")
        latest = panel.get_by_test_id("cd4ml-latest-runs").locator("li")
        expect(latest).to_have_count(3, timeout=UI_TIMEOUT_MS)
        assert latest.evaluate_all("ls => ls.map(l => l.dataset.runId)") == [ids["failed"], ids["trial"], ids["sweep"]]
        expect(panel.get_by_test_id(f"cd4ml-kind-{ids['trial']}")).to_have_text("trial")
        expect(panel.get_by_test_id(f"cd4ml-failure-{ids['failed']}")).to_have_text(f"cell-exception at cell 2: {MARKUP}")
        assert panel.locator("img").count() == 0
        _shot(page, tmp_path, "panel-kinds", "light")

        panel.get_by_test_id("cd4ml-open-dashboard").click()
        dashboard = page.get_by_test_id("cd4ml-dashboard")
        expect(dashboard).to_be_visible(timeout=UI_TIMEOUT_MS)
        table = dashboard.get_by_test_id("cd4ml-dashboard-table")
        rows = table.locator("tbody tr")

        # Plain runs of both branches, like with like: no sweep, no trial.
        kind = dashboard.get_by_test_id("cd4ml-filter-kind")
        expect(kind).to_have_value("run", timeout=UI_TIMEOUT_MS)
        expect(rows).to_have_count(3, timeout=UI_TIMEOUT_MS)
        assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.runId)")) == \
            sorted([ids["base"], ids["plain"], ids["failed"]])
        expect(table.locator('tbody tr[data-side="base"]')).to_have_count(1)
        assert set(table.locator("tbody td[data-kind]").evaluate_all("ts => ts.map(t => t.dataset.kind)")) == {"run"}
        expect(dashboard.get_by_test_id(f"cd4ml-kind-{ids['plain']}")).to_have_text("run")
        assert kind.locator("option").all_text_contents() == ["All kinds", "run", "trial", "sweep"]
        chart = dashboard.get_by_test_id("cd4ml-chart-time")
        expect(chart.locator("g.mark-symbol.role-mark path")).to_have_count(2, timeout=UI_TIMEOUT_MS)

        # The failed run says why, as text: its message is markup, shown literally.
        failure = dashboard.get_by_test_id(f"cd4ml-failure-{ids['failed']}")
        expect(failure).to_have_text(f"cell-exception at cell 2: {MARKUP}")
        expect(failure).to_be_visible()
        assert dashboard.locator("img").count() == 0
        assert page.evaluate("() => window.__cd4mlInjected === undefined")
        _shot(page, tmp_path, "dashboard-kinds", "light")

        # All kinds: the sweep and its trial too, the trial naming its sweep.
        kind.select_option("")
        expect(rows).to_have_count(5)
        trial = dashboard.get_by_test_id(f"cd4ml-kind-{ids['trial']}")
        expect(trial).to_have_text("trial")
        expect(trial).to_have_attribute("title", f"Trial of sweep {ids['sweep'][:8]}")
        expect(dashboard.get_by_test_id(f"cd4ml-kind-{ids['sweep']}")).to_have_text("sweep")
        expect(chart.locator("g.mark-symbol.role-mark path")).to_have_count(3, timeout=UI_TIMEOUT_MS)
        kind.select_option("trial")
        expect(rows).to_have_count(1)
        expect(rows).to_have_attribute("data-run-id", ids["trial"])
        _shot(page, tmp_path, "dashboard-kinds-trial", "light")
        assert not _errors(console), "browser console errors:\n" + "\n".join(_errors(console))
