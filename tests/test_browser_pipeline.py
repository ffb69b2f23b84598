"""Browser walk of the Pipelines view (#23): real ``jupyter lab``, Debian's Chromium, a real
two-step pipeline (prep -> train) in a real git repository with the embedded MLflow store.

From the Experiments dashboard's toolbar open Pipelines; a bad override (markup as the value) is
refused with the step and parameter named, rendered as text, and nothing starts; start with an
override and see both steps executed with their durations; start again and see two cache hits
naming the first run's steps; start a slow one and cancel it from the view.
"""
from __future__ import annotations

import re
from pathlib import Path

from nbfactory import percent, write_ipynb
from test_browser import (  # noqa: F401  (browser: the fixture)
    run_from_palette,
    JOB_TIMEOUT_MS, UI_TIMEOUT_MS, _get_json, _git, browser, open_lab, pytestmark, running_lab,
)

BRANCH = "try-pipeline"
PREP = percent("import os\nos.makedirs('data', exist_ok=True)\n"
               "open('data/rows.txt', 'w').write(''.join(f'{i}\\n' for i in range(rows)))",
               parameters="rows: int = 3")
TRAIN = percent("import time, mlflow\ntime.sleep(pause)\nn = len(open('data/rows.txt').read().split())\n"
                "mlflow.log_metric('score', n * max_depth)",
                parameters="max_depth: int = 2\npause: float = 0.0")
PIPELINE = """\
steps:
  prep:
    notebook: prep.ipynb
    parameters: {rows: 3}
    outputs: [data/rows.txt]
  train:
    notebook: train.ipynb
    needs: [prep]
    parameters: {max_depth: 2}
"""
MARKUP = "<img src=x onerror=window.__cd4mlInjected=1>"


def _this_labextension(repo: Path) -> None:
    """Serve the labextension of the cd4ml_nb imported here: an older copy installed under
    sys.prefix/share would otherwise win (running_lab's JUPYTER_DATA_DIR comes before it)."""
    import cd4ml_nb

    target = repo.parent / "jupyter" / "data" / "labextensions"
    target.mkdir(parents=True, exist_ok=True)
    (target / "cd4ml-nb").symlink_to(Path(cd4ml_nb.__file__).parent / "labextension", target_is_directory=True)


def _add_pipeline(repo: Path) -> None:
    _this_labextension(repo)
    write_ipynb(repo / "prep.ipynb", PREP)
    write_ipynb(repo / "train.ipynb", TRAIN)
    (repo / "cd4ml-pipeline.yaml").write_text(PIPELINE, encoding="utf-8")
    (repo / ".gitignore").write_text("data/\n", encoding="utf-8")
    _git(repo, "add", ".")
    _git(repo, "commit", "--quiet", "-m", "pipeline")


def _errors(console: list[str]) -> list[str]:
    """Console errors, less the browser's own line for the 400 the test provokes on purpose."""
    return [line for line in console if line.startswith(("[error]", "[pageerror]"))
            and "status of 400" not in line]


def _jobs(lab) -> list:
    status, body = _get_json(f"{lab.url}/cd4ml-nb/jobs", lab.token)
    assert status == 200, body
    return body["jobs"]


def test_pipelines_from_the_dashboard(browser, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    with running_lab(tmp_path, BRANCH, prepare=_add_pipeline) as lab, open_lab(browser, lab) as page:
        console: list[str] = []
        page.on("console", lambda m: console.append(f"[{m.type}] {m.text}"))
        page.on("pageerror", lambda e: console.append(f"[pageerror] {e}"))

        # --- from the dashboard's toolbar to the Pipelines view ---------------------------------
        run_from_palette(page, "Open Experiments Dashboard")
        expect(page.get_by_test_id("cd4ml-dashboard")).to_be_visible(timeout=UI_TIMEOUT_MS)
        page.locator(".jp-Toolbar-item .jp-ToolbarButtonComponent", has_text="Pipelines").click()
        view = page.get_by_test_id("cd4ml-pipelines")
        expect(view).to_be_visible(timeout=UI_TIMEOUT_MS)
        expect(view.get_by_test_id("cd4ml-pipeline-file")).to_have_text("cd4ml-pipeline.yaml", timeout=UI_TIMEOUT_MS)
        expect(view.get_by_test_id("cd4ml-pipelines-empty")).to_be_visible(timeout=UI_TIMEOUT_MS)

        name = view.get_by_test_id("cd4ml-pipeline-override-name")
        value = view.get_by_test_id("cd4ml-pipeline-override-value")
        start = view.get_by_test_id("cd4ml-pipeline-start")
        state = view.get_by_test_id("cd4ml-pipeline-job-state")

        # --- a bad override: refused, named, rendered as text, nothing started ------------------
        name.select_option("train.max_depth")
        value.fill(MARKUP)
        start.click()
        error = view.get_by_test_id("cd4ml-pipeline-start-error")
        expect(error).to_contain_text("train", timeout=UI_TIMEOUT_MS)
        expect(error).to_contain_text("max_depth")
        assert error.locator("img").count() == 0 and view.locator("img").count() == 0
        assert page.evaluate("() => window.__cd4mlInjected === undefined")
        assert _jobs(lab) == []

        # --- start with an override: both steps executed ----------------------------------------
        value.fill("4")
        start.click()
        expect(error).to_be_hidden(timeout=UI_TIMEOUT_MS)
        expect(state).to_have_attribute("data-state", re.compile("^(finished|failed|killed)$"), timeout=JOB_TIMEOUT_MS)
        assert state.text_content() == "finished", view.get_by_test_id("cd4ml-pipeline-job-error").all_text_contents()
        progress = view.get_by_test_id("cd4ml-pipeline-job-progress")
        assert progress.get_attribute("data-done") == "2" and progress.get_attribute("data-total") == "2"
        expect(view.get_by_test_id("cd4ml-pipeline-job-overrides")).to_have_text("train.max_depth=4")
        runs = view.get_by_test_id("cd4ml-pipeline-run")
        expect(runs).to_have_count(1, timeout=UI_TIMEOUT_MS)
        first = runs.first
        expect(first).to_have_attribute("data-status", "FINISHED", timeout=UI_TIMEOUT_MS)
        executed = {}
        for step in ("prep", "train"):
            row = first.get_by_test_id(f"cd4ml-pipeline-step-{step}")
            expect(row).to_have_attribute("data-status", "FINISHED")
            assert row.get_attribute("data-cache-hit") == ""
            expect(row).to_contain_text("executed")
            assert re.fullmatch(r"\d+(\.\d)? s|\d+ min \d\d s",
                                row.get_by_test_id("cd4ml-pipeline-step-duration").text_content() or "")
            executed[step] = row
        expect(executed["train"]).to_contain_text("score=12")
        status, body = _get_json(f"{lab.url}/cd4ml-nb/pipelines", lab.token)
        assert status == 200 and len(body["pipelines"]) == 1, body
        first_ids = {s["step"]: s["run_id"] for s in body["pipelines"][0]["steps"]}

        # --- the same again: two cache hits, naming the first run's steps -----------------------
        start.click()
        expect(runs).to_have_count(2, timeout=JOB_TIMEOUT_MS)
        expect(state).to_have_attribute("data-state", re.compile("^(finished|failed|killed)$"), timeout=JOB_TIMEOUT_MS)
        assert state.text_content() == "finished"
        newest = runs.first
        expect(newest).to_have_attribute("data-status", "FINISHED", timeout=UI_TIMEOUT_MS)
        expect(newest.get_by_test_id("cd4ml-pipeline-run-counts")).to_have_text(
            "0 executed, 2 cache hits, 0 failed, 0 skipped", timeout=UI_TIMEOUT_MS)
        for step, run_id in first_ids.items():
            row = newest.get_by_test_id(f"cd4ml-pipeline-step-{step}")
            assert row.get_attribute("data-cache-hit") == run_id
            expect(row).to_contain_text(f"cache hit of {run_id[:8]}")

        # --- a slow run, cancelled from the view -------------------------------------------------
        name.select_option("train.pause")
        value.fill("600")
        start.click()
        expect(runs).to_have_count(3, timeout=JOB_TIMEOUT_MS)
        expect(runs.first.get_by_test_id("cd4ml-pipeline-step-train")).to_have_attribute(
            "data-status", "RUNNING", timeout=JOB_TIMEOUT_MS)
        view.get_by_test_id("cd4ml-pipeline-cancel").click()
        expect(state).to_have_attribute("data-state", "killed", timeout=JOB_TIMEOUT_MS)
        expect(runs.first).to_have_attribute("data-status", "KILLED", timeout=JOB_TIMEOUT_MS)
        expect(runs.first.get_by_test_id("cd4ml-pipeline-step-train")).to_have_attribute("data-status", "KILLED")
        expect(view.get_by_test_id("cd4ml-pipeline-cancel")).to_be_hidden()
        assert _errors(console) == [], console
