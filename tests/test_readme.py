"""The README's code that users copy runs on the MLflow this package installs.

A snippet is the ```python block right after ``<!-- snippet: NAME ... -->`` in README.md. It runs in
a fresh interpreter (MLflow's tracking URI is process-wide) against a real SQLite store in a temp folder.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"

# Runs the snippet inside a run, with the names a notebook's earlier cells would have defined,
# then loads the model back from the store and predicts with it.
HARNESS = """
import json, sys
import mlflow, mlflow.sklearn
import numpy as np

snippet = sys.stdin.read()
rng = np.random.default_rng(0)
X = rng.random((60, 3))
y = X @ np.array([1.0, 2.0, 3.0])
experiment = mlflow.create_experiment("readme", artifact_location=sys.argv[1])
with mlflow.start_run(experiment_id=experiment) as run:
    names = {"X": X, "y": y, "max_depth": 4, "seed": 0}
    exec(compile(snippet, "README.md (snippet log-model)", "exec"), names)
model = mlflow.sklearn.load_model(f"runs:/{run.info.run_id}/model")
print(json.dumps({"same": bool(np.allclose(model.predict(X), names["estimator"].predict(X))),
                  "type": type(model).__name__}))
"""


def snippet(name: str) -> str:
    text = README.read_text(encoding="utf-8")
    found = re.search(rf"<!-- snippet: {re.escape(name)}\b[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert found, f"README.md has no ```python block right after <!-- snippet: {name} -->"
    return found.group(1)


def test_the_readme_model_logging_snippet_logs_a_tree_model_that_loads_back(tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    done = subprocess.run([sys.executable, "-c", HARNESS, (tmp_path / "artifacts").as_uri()], input=snippet("log-model"),
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"same": True, "type": "RandomForestRegressor"}
