"""
Growing batches on MNIST-1D
===========================

A batch-size schedule in place of a constant batch: :class:`~dask_adadamp.dampers.GeoDamp`
doubles the batch every three epochs, so later epochs take fewer model updates
for the same examples. :func:`dask_adadamp.plot_history` draws the schedule
and the training curves against epochs, model updates and wall-clock time.

MNIST-1D (Greydanus 2020) is generated on the spot by the ``mnist1d``
package: 4000 training and 1000 test signals of length 40, ten classes. Its
authors' table gives an MLP about 0.68 test accuracy.
"""
import matplotlib.pyplot as plt
import torch
from distributed import Client, LocalCluster

from dask_adadamp import DaskClassifier, plot_history
from dask_adadamp.dampers import GeoDamp
from dask_adadamp.datasets import mnist1d
from dask_adadamp.models import MLP

X_train, X_test, y_train, y_test = mnist1d(random_state=0)

# %%
# A small local cluster; on a real one, connect a ``Client`` to it instead.
cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                       dashboard_address=":0")
client = Client(cluster)


def classifier(lr):
    return DaskClassifier(
        MLP, module__n_features=40, module__hidden=(256, 256),
        criterion=torch.nn.CrossEntropyLoss,
        optimizer=torch.optim.SGD, lr=lr, optimizer__momentum=0.9,
        batch_size=GeoDamp(initial=64, factor=2, delay=3), grads_per_worker=64,
        max_epochs=18, random_state=0, verbose=0)


# %%
# The learning rate is chosen by code, on skorch's validation split (a fifth
# of the training rows, held out of every fit); the test rows stay unseen
# until the end.
fits = {lr: classifier(lr).fit(X_train, y_train) for lr in (0.3, 0.1, 0.03)}
for lr, fit in fits.items():
    print(f"lr {lr}: validation accuracy {fit.history[-1, 'valid_acc']:.3f}")
lr = max(fits, key=lambda lr: fits[lr].history[-1, "valid_acc"])
est = fits[lr]
print(f"lr {lr}: test accuracy {est.score(X_test, y_test):.3f} after "
      f"{est.history[-1, 'model_updates']} model updates; a constant batch of "
      f"64 takes {18 * (len(X_train) * 4 // 5 // 64)} for the same 18 epochs")

# %%
# The batch size doubles every third epoch, and the number of updates per
# epoch halves with it; ``valid_acc`` is skorch's validation split's accuracy.
fig = plot_history(est)
plt.show()

client.close()
cluster.close()
