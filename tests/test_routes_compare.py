"""Compare in Lab: `POST /cd4ml-nb/compare` serves what `cd4ml-nb diff` and `gate` compute;
`GET /cd4ml-nb/runs/ID/html` serves a run's HTML render; the parameter contract as JSON Schema
and the form's texts checked by the runner's own parser (`POST /cd4ml-nb/params/check`)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cd4ml_nb import repro
from cd4ml_nb.project import Project

from nbfactory import commit_all, git, init_repo, percent, write_ipynb
from test_routes import call

SCORE = percent(
    "import mlflow\nmlflow.log_metric('score', alpha * 2)\nmlflow.log_metric('rmse', 1 - alpha)",
    parameters="alpha: float = 0.5  # weight\nlabel: str = 'x'\nsizes: list[int] = [1, 2]",
)


def _run(root, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run([sys.executable, "-m", "cd4ml_nb.cli", "run", "score.ipynb", "-q", *args],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    from cd4ml_nb import tracking

    c = tracking.client(Project.discover(root))
    return c.search_runs([c.get_experiment_by_name(git(root, "rev-parse", "--abbrev-ref", "HEAD")).experiment_id],
                         order_by=["attributes.start_time DESC"], max_results=1)[0].info.run_id


@pytest.fixture(scope="module")
def two_branches(tmp_path_factory):
    """A run on master (alpha 0.5), then one on a branch that changed the notebook (alpha 0.7)."""
    root = init_repo(tmp_path_factory.mktemp("compare") / "served")
    write_ipynb(root / "score.ipynb", SCORE)
    (root / ".gitignore").write_text(".cd4ml/\ncd4ml-runs/\n")
    commit_all(root)
    base = _run(root)
    git(root, "checkout", "-q", "-b", "try-more-alpha")
    write_ipynb(root / "score.ipynb", SCORE.replace("alpha: float = 0.5", "alpha: float = 0.6"))
    commit_all(root, "more alpha")
    branch = _run(root, "-p", "alpha", "0.7")
    return root, base, branch


@pytest.fixture
def jp_root_dir(two_branches):
    return two_branches[0]


async def test_compare_serves_diff_deltas_and_gate(jp_fetch, two_branches):
    root, base, branch = two_branches
    code, data = await call(jp_fetch, "compare", method="POST",
                            body={"run_ids": [base[:8], branch], "metric": "score", "max_regression": "0"})
    assert code == 200, data
    assert data["reference"] == base
    assert [r["run_id"] for r in data["runs"]] == [base, branch]
    assert [r["branch"] for r in data["runs"]] == ["master", "try-more-alpha"]
    assert data["runs"][0]["html"] and data["runs"][0]["html"].endswith("score.html")
    deltas = {d["metric"]: d for d in data["deltas"]}
    assert deltas["score"]["goal"] == "maximize" and deltas["rmse"]["goal"] == "minimize"
    assert deltas["score"]["base"] == pytest.approx(1.0) and deltas["score"]["branch"] == pytest.approx(1.4)
    assert deltas["score"]["delta"] == pytest.approx(0.4)
    # The diff is exactly what `cd4ml-nb diff` computes (one implementation).
    expected = repro.diff_runs(Project.discover(root), base, branch).to_json()
    (diff,) = data["diffs"]
    assert diff["params_changed"] == {"alpha": ["0.5", "0.7"]} == {k: list(v) for k, v in expected["params_changed"].items()}
    assert diff["axes"] == expected["axes"] and diff["axes"]["code"]
    assert "alpha: float = 0.6" in diff["source_diff"]
    gate = data["gate"]
    assert gate["passed"] is True and gate["branch"] == "try-more-alpha" and gate["base"] == "master", gate
    assert gate["checks"] and gate["checks"][0].startswith("PASS")

    code, data = await call(jp_fetch, "compare", method="POST", body={"run_ids": [branch, base], "metric": "rmse"})
    assert code == 200 and data["gate"]["metric"] == "rmse"


@pytest.mark.parametrize("body, status", [
    ({"run_ids": ["0123456789ab"]}, 400),
    ({"run_ids": "abc"}, 400),
    ({"run_ids": ["zz-not-hex", "0123456789ab"]}, 400),
    ({"run_ids": ["0123456789abcdef", "0123456789abcdee"]}, 400),
    ({"run_ids": ["a" * 32] * 11}, 400),
])
async def test_compare_refuses_bad_input(jp_fetch, two_branches, body, status):
    code, data = await call(jp_fetch, "compare", method="POST", body=body)
    assert code == status, data
    assert data["message"] and "Traceback" not in data["message"]


async def test_run_html_is_served_rendered_and_sandboxed(jp_fetch, two_branches):
    _, base, _ = two_branches
    response = await jp_fetch("cd4ml-nb", "runs", base, "html")
    assert response.headers["Content-Type"].startswith("text/html")
    assert "sandbox" in response.headers["Content-Security-Policy"]
    assert response.body.lstrip().lower().startswith(b"<!doctype html")
    code, _ = await call(jp_fetch, "runs", "0123456789abcdef0123456789abcdef", "html")
    assert code in (400, 404)


async def test_params_contract_as_json_schema_and_checked_texts(jp_fetch, two_branches):
    code, data = await call(jp_fetch, "params", params={"path": "score.ipynb"})
    assert code == 200
    schema = data["schema"]
    assert schema["x-cd4ml-order"] == ["alpha", "label", "sizes"]
    assert schema["properties"]["alpha"] == {"type": "number", "title": "alpha", "x-cd4ml-type": "float",
                                             "x-cd4ml-nullable": False, "description": "weight", "default": 0.6}
    assert schema["properties"]["sizes"]["items"] == {"type": "integer"}
    assert schema["additionalProperties"] is False

    code, data = await call(jp_fetch, "params", "check", method="POST",
                            body={"path": "score.ipynb", "texts": {"alpha": "three", "sizes": "[1, 2, 3]", "label": "y"}})
    assert code == 200, data
    assert data["values"] == {"sizes": [1, 2, 3], "label": "y"}
    assert set(data["errors"]) == {"alpha"} and "is not a number" in data["errors"]["alpha"]
    code, data = await call(jp_fetch, "params", "check", method="POST", body={"path": "score.ipynb", "texts": [1]})
    assert code == 400
