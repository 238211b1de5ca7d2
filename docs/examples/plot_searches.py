"""
Grid search and Hyperband
=========================

The estimators are scikit-learn estimators, so a ``GridSearchCV`` searches
any parameter, the schedule's included (``batch_size__factor`` routes to the
schedule as ``module__hidden`` routes to the module). dask-ml's
``HyperbandSearchCV`` runs through :mod:`dask_adadamp.compat` (dask-ml's
class with a fix for dask 2026.8, dask/dask-ml#1016) on dask arrays, one
``partial_fit`` per block.
"""
import time

import dask.array as da
import matplotlib.pyplot as plt
import torch
from distributed import Client, LocalCluster
from sklearn.model_selection import GridSearchCV

from dask_adadamp import DaskClassifier
from dask_adadamp.compat import HyperbandSearchCV
from dask_adadamp.dampers import GeoDamp
from dask_adadamp.datasets import digits
from dask_adadamp.models import MLP

X_train, X_test, y_train, y_test = digits(random_state=0)
cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                       dashboard_address=":0")
client = Client(cluster)


def make_estimator(**kwargs):
    return DaskClassifier(
        MLP, module__n_features=64, module__hidden=32,
        criterion=torch.nn.CrossEntropyLoss, batch_size=GeoDamp,
        batch_size__initial=32, batch_size__delay=1, grads_per_worker=64,
        train_split=None, random_state=0, verbose=0, **kwargs)


# %%
# Grid search: 4 candidates x 2 folds, the fits one after another, each on
# the whole cluster (``joblib.parallel_backend("dask")`` with ``n_jobs > 1``
# runs them side by side: see the user guide's searches page).
grid = GridSearchCV(make_estimator(max_epochs=2),
                    {"lr": [0.02, 0.2], "batch_size__factor": [1, 2]}, cv=2)
grid.fit(X_train, y_train)
print("best:", grid.best_params_, f"cv accuracy {grid.best_score_:.3f}")

labels = [f"lr={p['lr']}, factor={p['batch_size__factor']}"
          for p in grid.cv_results_["params"]]
fig, ax = plt.subplots(figsize=(7, 3), layout="constrained")
ax.barh(labels, grid.cv_results_["mean_test_score"])
ax.set_xlabel("mean cross-validated accuracy")
plt.show()

# %%
# Hyperband on dask arrays: one epoch per ``partial_fit`` call on one block of
# 300 rows; the search drops the poor models early.
X = da.from_array(X_train[:1200], chunks=300)
y = da.from_array(y_train[:1200], chunks=300)
search = HyperbandSearchCV(make_estimator(max_epochs=1),
                           {"lr": [0.001, 0.01, 0.1, 0.3], "module__hidden": [16, 64]},
                           max_iter=6, random_state=0)
search.fit(X, y)
print("best:", search.best_params_, f"held-out accuracy {search.best_score_:.3f}, "
      f"test accuracy {search.score(X_test, y_test):.3f}")

fig, ax = plt.subplots(figsize=(7, 3.5), layout="constrained")
for model_id, hist in search.model_history_.items():
    ax.plot([h["partial_fit_calls"] for h in hist], [h["score"] for h in hist],
            marker=".", color="C0", alpha=0.6)
ax.set_xlabel("partial_fit calls")
ax.set_ylabel("held-out accuracy")
ax.set_title(f"Hyperband: {len(search.model_history_)} models")
plt.show()

# %%
# The search returns once it has its best model; ``partial_fit`` calls of
# models it dropped may still run on the workers for a moment. They end
# before the cluster does.
def running(dask_worker):
    # cancelled tasks stay here until their thread returns
    return len(dask_worker.state.executing) + len(dask_worker.state.long_running)


while sum(client.run(running).values()):
    time.sleep(0.1)
client.close()
cluster.close()
