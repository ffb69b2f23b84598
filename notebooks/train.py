# %% [markdown]
# # Demand forecasting: a CD4ML training notebook
#
# Predicts daily unit sales per store and item (synthetic data in the spirit of the CD4ML
# workshop's Favorita data) with a decision tree or a random forest. Run it as a tracked
# experiment on the current git branch:
#
#     cd4ml-nb run notebooks/train.ipynb -p model random_forest -p n_estimators 50
#
# Every run lands in the MLflow experiment named after the branch, with its parameters,
# metrics, the trained model and the executed notebook.

# %% tags=["parameters"]
model: str = "decision_tree"  # decision_tree or random_forest
max_depth: int = 8  # maximum depth of each tree
n_estimators: int = 40  # trees in the forest (random_forest only)
seed: int = 42  # random seed of the model
validation_days: int = 21  # the last days held out for validation
data_path: str = "data/sales.csv"  # training data, relative to this notebook

# %%
import importlib.metadata

import mlflow
import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestRegressor
from sklearn.tree import DecisionTreeRegressor

import cd4ml_nb

run = cd4ml_nb.track()  # inside `cd4ml-nb run` this is the run created for the job
print(f"tracking to run {run.info.run_id}")

# %% [markdown]
# ## Data: the last `validation_days` days are held out (time-based split)

# %%
sales = pd.read_csv(data_path, parse_dates=["date"])
cd4ml_nb.log_dataset(sales, "sales", source=data_path)  # schema and sampling fingerprints of the data
sales["dayofweek"] = sales["date"].dt.dayofweek
sales["day"] = (sales["date"] - sales["date"].min()).dt.days
features = ["store_nbr", "item_nbr", "onpromotion", "dayofweek", "day"]
cutoff = sales["date"].max() - pd.Timedelta(days=validation_days)
train, valid = sales[sales["date"] <= cutoff], sales[sales["date"] > cutoff]
print(f"{len(train)} training rows, {len(valid)} validation rows, cutoff {cutoff.date()}")

# %% [markdown]
# ## Model

# %%
if model == "decision_tree":
    estimator = DecisionTreeRegressor(max_depth=max_depth, random_state=seed)
elif model == "random_forest":
    estimator = RandomForestRegressor(n_estimators=n_estimators, max_depth=max_depth, random_state=seed, n_jobs=1)
else:
    raise ValueError(f"unknown model {model!r}: use decision_tree or random_forest")
estimator.fit(train[features], np.log1p(train["unit_sales"]))

# %% [markdown]
# ## Evaluation: NWRMSLE (the workshop's metric), MAE and R²

# %%
predicted = np.expm1(estimator.predict(valid[features])).clip(min=0)
actual = valid["unit_sales"].to_numpy()
weights = np.where(valid["onpromotion"] == 1, 1.25, 1.0)
nwrmsle = float(np.sqrt(np.sum(weights * (np.log1p(predicted) - np.log1p(actual)) ** 2) / np.sum(weights)))
mae = float(np.mean(np.abs(predicted - actual)))
r2 = float(1 - np.sum((actual - predicted) ** 2) / np.sum((actual - actual.mean()) ** 2))
mlflow.log_metrics({"nwrmsle": nwrmsle, "mae": mae, "r2": r2})
print(f"nwrmsle={nwrmsle:.4f} mae={mae:.3f} r2={r2:.4f}")

# %%
# cloudpickle, not MLflow 3's default skops: skops refuses the trees inside a decision tree or a
# random forest (sklearn.tree._tree.Tree) unless each such type is listed in skops_trusted_types,
# while cloudpickle saves any estimator. Like any pickle it runs code when loaded: load models only
# from a store you trust.
mlflow.sklearn.log_model(
    estimator,
    name="model",
    serialization_format="cloudpickle",
    pip_requirements=[f"scikit-learn=={importlib.metadata.version('scikit-learn')}"],
    input_example=valid[features].head(3),
)

# %% [markdown]
# ## Predictions against actual sales, per validation day

# %%
daily = valid.assign(predicted=predicted).groupby("date")[["unit_sales", "predicted"]].sum()
daily.plot(title=f"{model}: daily unit sales, actual vs predicted", figsize=(8, 3));
