"""
The cluster follows the batch
=============================

With ``max_workers`` the fit holds the cluster at ``ceil(B / grads_per_worker)``
workers for an update of ``B`` examples (at most ``max_workers``): it asks the
cluster manager for them as the batch grows, without waiting, spreads the data
to the ones that arrive, and gives the cluster back at its old size at the
end. A growing batch then costs about as much wall-clock time per update as a
small one.
"""
import matplotlib.pyplot as plt
import torch
from distributed import Client, LocalCluster

from dask_adadamp import DaskClassifier
from dask_adadamp.dampers import GeoDamp
from dask_adadamp.datasets import digits
from dask_adadamp.models import MLP

X_train, X_test, y_train, y_test = digits(random_state=0)

# One worker to start with.
cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                       dashboard_address=":0")
client = Client(cluster)

est = DaskClassifier(
    MLP, module__n_features=64, module__hidden=64,
    criterion=torch.nn.CrossEntropyLoss, lr=0.05, optimizer__momentum=0.9,
    batch_size=GeoDamp(initial=32, factor=2, delay=1), grads_per_worker=32,
    max_workers=4, max_epochs=4, train_split=None, random_state=0, verbose=0)
est.fit(X_train, y_train)
print(f"test accuracy {est.score(X_test, y_test):.3f}; "
      f"workers after the fit: {len(client.nthreads())}")

# %%
# Every update records its batch size and the workers that computed it. The
# last update of an epoch takes the examples left over, fewer than the
# batch, and so needs fewer workers.
updates = [b for epoch in est.history for b in epoch["batches"]]
fig, ax = plt.subplots(figsize=(7, 3.5), layout="constrained")
lines = ax.step(range(1, len(updates) + 1), [u["batch_size"] for u in updates],
                where="post", label="batch size")
ax.set_xlabel("model update")
ax.set_ylabel("batch size")
right = ax.twinx()
lines += right.step(range(1, len(updates) + 1), [u["n_workers"] for u in updates],
                   where="post", color="C1", label="workers computing the update")
right.set_ylabel("workers")
right.set_ylim(0, 5)
ax.legend(handles=lines, loc="upper left")
plt.show()

client.close()
cluster.close()
