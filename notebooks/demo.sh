#!/usr/bin/env bash
# The whole CD4ML story in one go, in a throw-away git repository:
# a baseline on master, an experiment branch, compare, gate, review report, promote the winner.
#   make demo   (or: bash notebooks/demo.sh)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)/demand-forecast"
mkdir -p "$work/notebooks"
cp -r "$here"/train.ipynb "$here"/train.py "$here"/jupytext.toml "$here"/smoke.yaml "$here"/data "$work/notebooks/"
cd "$work"
unset MLFLOW_TRACKING_URI
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "master: a decision-tree baseline, tracked in the experiment 'master'"
git init -q -b master && git add -A && git -c user.name=demo -c user.email=demo@example.com commit -qm "baseline"
cd4ml-nb run notebooks/train.ipynb -q

say "branch try-random-forest: change the model in the paired .py (what reviewers read), sync, run"
git checkout -q -b try-random-forest
sed -i 's/^model: str = "decision_tree"/model: str = "random_forest"/' notebooks/train.py
cd4ml-nb sync notebooks/train.py
git -c user.name=demo -c user.email=demo@example.com commit -qam "try a random forest"
cd4ml-nb run notebooks/train.ipynb -q

say "compare the branch with master"
cd4ml-nb compare

say "gate: nwrmsle may not get worse by more than 2%"
cd4ml-nb gate --metric nwrmsle --goal minimize --max-regression 2% && gate=passed || gate=failed

say "review report (markdown for the pull request, HTML with a chart)"
cd4ml-nb report --metric nwrmsle --max-regression 2% -o report.md || true
cd4ml-nb report --format html --metric nwrmsle --max-regression 2% -o report.html || true
sed -n '1,20p' report.md

say "promote the branch's run if the gate passes"
run_id="$(cd4ml-nb runs --json | python -c 'import json,sys; print(json.load(sys.stdin)["runs"][0]["run_id"])')"
cd4ml-nb promote "$run_id" --model demand-forecast --alias champion --if-gate-passes \
    --metric nwrmsle --goal minimize --max-regression 2% || true

say "done (gate $gate): everything is in $work"
echo "  report:   $work/report.md and $work/report.html"
echo "  MLflow:   (cd $work && cd4ml-nb ui)"
