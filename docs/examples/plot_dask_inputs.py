"""
Dask arrays and DataFrames
==========================

Data that lives on the cluster is trained on where it is: a dask array's
blocks and a dask DataFrame's partitions become the fit's shards on the
workers that compute them, and never pass through this process. A
DataFrame's numeric columns are selected as usual (``ddf[["a", "b"]]``); X
becomes float32 and integer labels int64. ``predict``, ``predict_proba`` and
``score`` take them too and compute on the workers.
"""
import tempfile

import dask.array as da
import dask.dataframe as dd
import matplotlib.pyplot as plt
import pandas as pd
import torch
from distributed import Client, LocalCluster

from dask_adadamp import DaskClassifier
from dask_adadamp.datasets import digits
from dask_adadamp.models import MLP

X_train, X_test, y_train, y_test = digits(random_state=0)
cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                       dashboard_address=":0")
client = Client(cluster)


def make_estimator():
    # Dask inputs take no skorch validation split: score held-out data.
    return DaskClassifier(
        MLP, module__n_features=64, module__hidden=64,
        criterion=torch.nn.CrossEntropyLoss, lr=0.05, optimizer__momentum=0.9,
        batch_size=64, grads_per_worker=32, max_epochs=6, train_split=None,
        random_state=0, verbose=0)


# %%
# A dask array, persisted in blocks of 300 rows: an update's chunks are
# computed by the workers that hold their blocks.
X = da.from_array(X_train, chunks=(300, 64)).persist()
y = da.from_array(y_train, chunks=300).persist()
on_array = make_estimator().fit(X, y)
print(f"dask array: test accuracy {on_array.score(X_test, y_test):.3f}")

# %%
# A dask DataFrame read from Parquet, with a text column left out by the
# column selection. The partitions are read on the workers.
columns = [f"pixel{i}" for i in range(64)]
frame = pd.DataFrame(X_train, columns=columns).assign(label=y_train, note="digit")
path = tempfile.mkdtemp()
dd.from_pandas(frame, npartitions=4).to_parquet(path)

ddf = dd.read_parquet(path)
on_frame = make_estimator().fit(ddf[columns], ddf["label"])
test = dd.from_pandas(pd.DataFrame(X_test, columns=columns).assign(label=y_test),
                      npartitions=2)
print("DataFrame: test accuracy "
      f"{on_frame.score(test[columns], test['label']):.3f} (computed on the workers)")
print("predict_proba of a DataFrame:", on_frame.predict_proba(test[columns]))

# %%
# Both fits' training loss per epoch.
fig, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
for est, label in [(on_array, "dask array"), (on_frame, "dask DataFrame (Parquet)")]:
    ax.plot(est.history[:, "epoch"], est.history[:, "train_loss"], marker="o",
            label=label)
ax.set_xlabel("epoch")
ax.set_ylabel("training loss")
ax.legend()
plt.show()

client.close()
cluster.close()
