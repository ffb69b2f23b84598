"""Browser: the Branches view (palette: Open Branches) in a real ``jupyter lab`` with Debian's
Chromium (see test_browser.py) lists each branch experiment with the state ``branches sync``
recorded, filters them by state, and lists the runs of the branch clicked; the console stays clean."""
from __future__ import annotations

from pathlib import Path

from test_browser import (  # noqa: F401  (browser: the fixture)
    run_from_palette,
    UI_TIMEOUT_MS, _git, browser, open_lab, pytestmark, running_lab,
)


def _runs_and_merges(repo: Path) -> None:
    """A run on main; ``done`` ran and was merged (--no-ff) then deleted; ``wip`` ran and stays."""
    from cd4ml_nb import branches, tracking
    from cd4ml_nb.project import Project

    (repo / ".gitignore").write_text(".cd4ml/\n", encoding="utf-8")
    _git(repo, "add", ".gitignore")
    _git(repo, "commit", "--quiet", "-m", "ignore the store")
    project = Project.discover(repo)
    c = tracking.client(project)

    def run(value: float) -> None:  # a finished run with the provenance a kernel run carries
        git = project.git_info(repo)
        experiment = tracking.ensure_experiment(c, project, tracking.experiment_name(project, git))
        created = c.create_run(experiment, tags={tracking.GIT_COMMIT: git.commit, tracking.GIT_BRANCH: git.branch})
        c.log_metric(created.info.run_id, "accuracy", value)
        c.set_terminated(created.info.run_id, "FINISHED")

    run(0.5)
    for branch, value in (("done", 0.7), ("wip", 0.6)):
        _git(repo, "checkout", "--quiet", "-b", branch)
        (repo / f"{branch}.txt").write_text(branch, encoding="utf-8")
        _git(repo, "add", f"{branch}.txt")
        _git(repo, "commit", "--quiet", "-m", f"{branch} work")
        run(value)
        _git(repo, "checkout", "--quiet", "main")
    _git(repo, "merge", "--quiet", "--no-ff", "-m", "merge done", "done")
    _git(repo, "branch", "--quiet", "-D", "done")
    assert branches.sync(project)


def test_branches_view_shows_states_and_runs_of_a_branch(browser, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    with running_lab(tmp_path, "review", prepare=_runs_and_merges) as lab, open_lab(browser, lab) as page:
        console: list[str] = []
        page.on("console", lambda m: console.append(f"[{m.type}] {m.text}"))
        page.on("pageerror", lambda e: console.append(f"[pageerror] {e}"))
        run_from_palette(page, "Open Branches")
        view = page.locator(".cd4ml-nb-branches")
        table = view.locator(".cd4ml-nb-branches-table")
        expect(table.locator('tr[data-experiment="done"]')).to_contain_text("merged", timeout=UI_TIMEOUT_MS)
        expect(table.locator('tr[data-experiment="wip"]')).to_contain_text("active")
        expect(table.locator('tr[data-experiment="main"]')).to_have_count(1)
        expect(view).to_contain_text("current: review")

        view.locator("select.cd4ml-nb-branches-state").select_option("merged")
        expect(table.locator("tr[data-experiment]")).to_have_count(1)
        table = view.locator(".cd4ml-nb-branches-table")
        table.locator('tr[data-experiment="done"]').click()
        runs = view.locator(".cd4ml-nb-branch-runs")
        expect(runs.locator("tr")).to_have_count(2, timeout=UI_TIMEOUT_MS)  # the header and done's run
        expect(runs).to_contain_text("0.7000")
        expect(runs).to_contain_text("FINISHED")
        assert not [line for line in console if line.startswith(("[error]", "[pageerror]"))], console
