"""Data axes: schema and sampling fingerprints of logged datasets, and `cd4ml-nb diff`.

Real git repositories, real kernels, real SQLite MLflow stores.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cd4ml_nb.cli import main

from nbfactory import commit_all, init_repo, percent, write_ipynb

NOTEBOOK = percent(
    "import mlflow, pandas as pd\nimport cd4ml_nb\n"
    "df = pd.read_csv('data.csv')\n"
    "cd4ml_nb.log_dataset(df, 'sales')\n"
    "cd4ml_nb.log_dataset('data.csv', 'sales_file', context='validation')\n"
    "mlflow.log_metric('mean_x', float(df['x'].mean()))",
)


def write_data(repo: Path, rows: int = 200, extra: bool = False, start: int = 0) -> None:
    lines = ["x,y,store" + (",promo" if extra else "")]
    for i in range(start, start + rows):
        lines.append(f"{i},{(i * 7) % 13 / 10},s{i % 4}" + (f",{i % 2}" if extra else ""))
    (repo / "data.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    repo = init_repo(tmp_path / "repo", branch="master")
    write_ipynb(repo / "train.ipynb", NOTEBOOK)
    write_data(repo)
    commit_all(repo, "notebook and data")
    monkeypatch.chdir(repo)
    return repo


def client(repo: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{repo / '.cd4ml' / 'mlflow.db'}")


def run(repo: Path, capsys) -> str:
    capsys.readouterr()
    assert main(["run", "train.ipynb", "-q", "--no-html", "--json"]) == 0
    return json.loads(capsys.readouterr().out)["run_id"]


def diff(capsys, a: str, b: str) -> dict:
    capsys.readouterr()
    assert main(["diff", a, b, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_logged_dataset_carries_schema_and_sampling_fingerprints(repo, capsys):
    run_id = run(repo, capsys)
    got = client(repo).get_run(run_id)
    tags = got.data.tags
    assert len(tags["cd4ml.data.sales.schema"]) == 16 and len(tags["cd4ml.data.sales.digest"]) == 32
    assert tags["cd4ml.data.sales.rows"] == "200"
    assert tags["cd4ml.data.sales_file.digest"] == tags["cd4ml.data.sales.digest"]  # same content, read from the path
    inputs = {d.dataset.name: d for d in got.inputs.dataset_inputs}
    assert set(inputs) == {"sales", "sales_file"}
    sales = inputs["sales"]
    assert json.loads(sales.dataset.profile)["num_rows"] == 200
    assert [c["name"] for c in json.loads(sales.dataset.schema)["mlflow_colspec"]] == ["x", "y", "store"]
    assert {t.key: t.value for t in sales.tags}["mlflow.data.context"] == "training"
    assert {t.key: t.value for t in inputs["sales_file"].tags}["mlflow.data.context"] == "validation"
    assert "data.csv" in inputs["sales_file"].dataset.source
    # the full fingerprint is an artifact: schema, missing counts, quantiles, cardinalities
    path = client(repo).download_artifacts(run_id, "cd4ml_data/sales.json", str(repo / ".cd4ml"))
    fp = json.loads(Path(path).read_text())
    assert fp["schema"] == {"x": "int64", "y": "float64", "store": "str"}  # pandas 3: str dtype
    assert fp["columns"]["x"]["quantiles"][0] == 0 and fp["columns"]["x"]["quantiles"][-1] == 199
    assert fp["columns"]["store"]["cardinality"] == 4 and fp["columns"]["y"]["missing"] == 0
    # the environment axis: artifact and hash tag, with the kernel name
    assert len(tags["cd4ml.env.hash"]) == 16
    env = json.loads(Path(client(repo).download_artifacts(run_id, "environment.json", str(repo / ".cd4ml"))).read_text())
    assert env["kernel"] == "python3" and "mlflow" in env["packages"] and env["python"] == tags["cd4ml.env.python"]


def test_log_dataset_interactively_starts_a_tracked_run(repo):
    import mlflow
    import pandas as pd

    import cd4ml_nb

    try:
        fp = cd4ml_nb.log_dataset(pd.read_csv(repo / "data.csv"), "sales")
        run_id = mlflow.active_run().info.run_id
    finally:
        mlflow.end_run()
    got = client(repo).get_run(run_id)
    assert got.data.tags["cd4ml.interactive"] == "true"
    assert got.data.tags["cd4ml.data.sales.digest"] == fp.digest and fp.rows == 200
    assert [d.dataset.name for d in got.inputs.dataset_inputs] == ["sales"]


def test_diff_reports_schema_and_sampling_changes(repo, capsys):
    first = run(repo, capsys)
    same = run(repo, capsys)
    d = diff(capsys, first, same)
    assert d["axes"] == {"code": False, "model": False, "schema": False, "sampling": False, "environment": False}
    assert [x["shifted"] for x in d["datasets"]] == [[], []]

    write_data(repo, extra=True)  # a column is added
    commit_all(repo, "promo column")
    added = run(repo, capsys)
    d = diff(capsys, first, added)
    sales = next(x for x in d["datasets"] if x["name"] == "sales")
    assert d["axes"]["schema"] and sales["added"] == ["promo"] and sales["removed"] == []
    assert main(["diff", first, added]) == 0
    out = capsys.readouterr().out
    assert "sales: added promo" in out and "changed axes: code, schema, sampling" in out

    write_data(repo, rows=150, start=100)  # other rows: x shifts, y and store keep their distribution
    commit_all(repo, "recent rows only")
    shifted = run(repo, capsys)
    d = diff(capsys, first, shifted)
    sales = next(x for x in d["datasets"] if x["name"] == "sales")
    assert not d["axes"]["schema"] and d["axes"]["sampling"]
    assert sales["rows"] == [200, 150] and sales["sampling_changed"]
    assert [(s["column"], s["statistic"]) for s in sales["shifted"]] == [("x", "psi")]
    assert sales["shifted"][0]["value"] > 0.1
    assert d["metrics"]["mean_x"] == [99.5, 174.5]
    assert main(["diff", first, shifted]) == 0
    out = capsys.readouterr().out
    assert "rows 200 -> 150 (-50); shifted: x: psi" in out and "PSI over recorded deciles" in out


def test_diff_of_an_unknown_run_is_bad_input(repo, capsys):
    first = run(repo, capsys)
    assert main(["diff", first, "0123456789abcdef"]) == 2
    assert "no run '0123456789abcdef'" in capsys.readouterr().err


def test_gate_refuses_across_a_schema_change_unless_allowed(repo, capsys):
    from nbfactory import git

    run(repo, capsys)
    git(repo, "checkout", "-q", "-b", "wider-data")
    write_data(repo, extra=True)
    commit_all(repo, "promo column")
    run(repo, capsys)
    gate = ["gate", "--metric", "mean_x", "--goal", "maximize", "--max-regression", "1%"]
    assert main(gate) == 2
    err = capsys.readouterr().err
    assert "schema of dataset(s) sales, sales_file differs" in err and "--allow-schema-change" in err
    assert main([*gate, "--allow-schema-change"]) == 0
    assert "PASS train.ipynb mean_x" in capsys.readouterr().out
    assert main(["compare"]) == 0
    assert "data schema changed: sales, sales_file" in capsys.readouterr().out
    assert main(["report"]) == 0
    assert "**Data schema changed:** `sales`, `sales_file`" in capsys.readouterr().out
