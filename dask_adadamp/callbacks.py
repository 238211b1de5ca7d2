"""skorch callbacks that know batch sizes change during a fit."""
import tqdm
from skorch.callbacks import ProgressBar as _SkorchProgressBar
from skorch.dataset import get_len


class ProgressBar(_SkorchProgressBar):
    """skorch's progress bar, counting examples instead of batches.

    With a batch-size schedule the number of updates in an epoch is not
    known when it starts (AdaDamp's depends on the loss), but the number of
    examples is: this bar runs over the epoch's training and validation
    examples, one step of ``len(batch)`` per batch, and shows the last
    update's values of ``postfix_keys`` beside it.

    Parameters
    ----------
    postfix_keys : list of str or None (default=None)
        Keys of ``net.history[-1, "batches", -1]`` to show; None shows
        ``train_loss``, ``batch_size``, ``lr`` and ``n_workers``.
    detect_notebook : bool (default=True)
        Draw a notebook widget in Jupyter (needs ``ipywidgets``).

    Examples
    --------
    >>> from dask_adadamp import DaskClassifier, ProgressBar
    >>> est = DaskClassifier(torch.nn.Linear, callbacks=[ProgressBar()])  # doctest: +SKIP

    For a long epoch it prints, and keeps updating, a line such as::

        41%|████      | 737/1.80k [00:03<00:04, 227examples/s, train_loss=0.52, batch_size=64, lr=0.1, n_workers=2]
    """

    def __init__(self, postfix_keys=None, detect_notebook=True):
        super().__init__(batches_per_epoch="auto", detect_notebook=detect_notebook,
                         postfix_keys=postfix_keys or ["train_loss", "batch_size",
                                                       "lr", "n_workers"])

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        # Dask arrays have no skorch dataset here: the bar then just counts.
        total = (None if dataset_train is None
                 else get_len(dataset_train) + (0 if dataset_valid is None
                                                else get_len(dataset_valid)))
        bar = tqdm.tqdm_notebook if self._use_notebook() else tqdm.tqdm
        self.pbar_ = bar(total=total, leave=False, unit="examples", unit_scale=True)

    def on_batch_end(self, net, batch=None, training=None, **kwargs):
        self.pbar_.set_postfix(self._get_postfix_dict(net), refresh=False)
        # A training batch is the update (its len is its examples); a
        # validation batch is skorch's (X, y).
        self.pbar_.update(len(batch) if training else get_len(batch[0]))
