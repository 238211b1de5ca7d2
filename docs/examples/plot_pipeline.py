"""
In a scikit-learn Pipeline
==========================

The estimators are scikit-learn estimators: a ``Pipeline`` scales the
features with ``StandardScaler`` before the net sees them, and a
``GridSearchCV`` over the pipeline chooses the learning rate by
cross-validation on the training rows (``daskclassifier__lr`` routes to the
net as in any pipeline). Only the net's training runs on the cluster; the
scaler fits and transforms in this process.

scikit-learn's transformers return float64 and the module's weights are
float32: the net converts X to its module's dtype once, where it places the
rows on the workers (and each validation and prediction batch likewise), so
the pipeline needs no cast.
"""
import matplotlib.pyplot as plt
import torch
from distributed import Client, LocalCluster
from sklearn.datasets import load_digits
from sklearn.metrics import ConfusionMatrixDisplay
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dask_adadamp import DaskClassifier
from dask_adadamp.models import MLP

X, y = load_digits(return_X_y=True)  # pixel values 0..16, float64
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.2, random_state=0, stratify=y)

cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                       dashboard_address=":0")
client = Client(cluster)

pipe = make_pipeline(
    StandardScaler(),
    DaskClassifier(MLP, module__n_features=64, module__hidden=64,
                   criterion=torch.nn.CrossEntropyLoss, optimizer__momentum=0.9,
                   batch_size=64, grads_per_worker=32, max_epochs=10,
                   train_split=None, random_state=0, verbose=0))

# %%
# Three folds of the training rows choose the learning rate; the best
# pipeline is then refit on all of them. The test rows are used once, at
# the end.
search = GridSearchCV(pipe, {"daskclassifier__lr": [0.3, 0.1, 0.03]}, cv=3)
search.fit(X_train, y_train)
for lr, score in zip(search.cv_results_["param_daskclassifier__lr"],
                     search.cv_results_["mean_test_score"]):
    print(f"lr {lr}: cross-validated accuracy {score:.3f}")
print("chosen:", search.best_params_,
      f"test accuracy {search.score(X_test, y_test):.3f}")

# %%
# The chosen pipeline's mistakes on the test rows.
ConfusionMatrixDisplay.from_estimator(search.best_estimator_, X_test,
                                      y_test, colorbar=False)
plt.title("digits, StandardScaler + DaskClassifier")
plt.show()

client.close()
cluster.close()
