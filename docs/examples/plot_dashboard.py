"""
The /adadamp dashboard page
===========================

Every fit reports its updates to the scheduler, which serves them on the Dask
dashboard at ``/adadamp`` (live plots of batch size, learning rate, workers,
loss, examples per second, the schedule's signal and each update's compute
and communication time) and as JSON at ``/adadamp/metrics.json``. Updates are
direct calls to the workers, not tasks, so this page is where they show.

Below, a fit's numbers are read back from ``metrics.json``; the screenshot at
the end is the page itself, taken by the project's browser test
(``tests/test_dashboard_browser.py``) during an AdaDamp fit.
"""
import json
import time
from pathlib import Path
from urllib.request import urlopen

import matplotlib.pyplot as plt
import torch
from distributed import Client, LocalCluster

from dask_adadamp import DaskClassifier
from dask_adadamp.dampers import AdaDamp
from dask_adadamp.datasets import digits
from dask_adadamp.models import MLP

X_train, X_test, y_train, y_test = digits(random_state=0)
cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                       dashboard_address=":0")
client = Client(cluster)
page = client.dashboard_link.replace("/status", "/adadamp")
print("the page:", page)

est = DaskClassifier(
    MLP, module__n_features=64, module__hidden=64,
    criterion=torch.nn.CrossEntropyLoss, lr=0.05, optimizer__momentum=0.9,
    batch_size=AdaDamp(initial=16, approx=0.25, dwell=4), grads_per_worker=32,
    max_epochs=4, train_split=None, random_state=0, verbose=0)
est.fit(X_train, y_train)

# %%
# ``metrics.json`` holds every recent fit on this scheduler; the fit's last
# messages reach it a moment after ``fit`` returns.
for _ in range(100):
    with urlopen(page + "/metrics.json") as answer:
        fit = json.load(answer)["fits"][-1]
    if fit["status"] == "finished":
        break
    time.sleep(0.1)
print(fit["name"], fit["status"], fit["info"])
updates = fit["updates"]

fig, axes = plt.subplots(1, 3, figsize=(10, 3), layout="constrained")
for ax, key, title in zip(axes, ["batch_size", "signal", "loss"],
                          ["Batch size", "Loss ratio", "Training loss"]):
    ax.plot(updates["update"], updates[key])
    ax.set_title(title)
    ax.set_xlabel("model update")
plt.show()

# %%
# The page in a browser (``/adadamp`` on the dashboard's address). The image
# is in the repository's ``docs/img``; the gallery runs examples from
# ``docs/examples``.
screenshot = Path("..", "img", "adadamp-dashboard.png")
fig, ax = plt.subplots(figsize=(10, 6.2), layout="constrained")
ax.imshow(plt.imread(screenshot))
ax.set_axis_off()
plt.show()

client.close()
cluster.close()
