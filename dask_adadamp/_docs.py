"""The estimators' shared docstring sections, filled in as skorch fills its
own (``skorch.classifier.get_neural_net_clf_doc``)."""

#: The parameters every Dask net adds to skorch's.
DASK_PARAMETERS = """\
    client : distributed.Client, str or None (default=None)
        The cluster to train on: a client, a scheduler address, or None
        for the current client (``distributed.get_client()``), falling back
        to a local cluster started once per process.
    grads_per_worker : int (default=128)
        Most examples in one chunk. An update of ``B`` examples is cut
        into about ``ceil(B / grads_per_worker)`` chunks, each computed by
        the worker that holds its rows.
    random_state : int, numpy.random.RandomState or None (default=None)
        Seeds the module's initialization, the placement of the data and
        every update's sample. With an int, fits are repeatable bit for
        bit, whatever the number of workers. With None the seed is drawn
        from torch's global generator, so ``torch.manual_seed(n)`` before
        a fit repeats it, as with skorch.
    max_batch_size : int or None (default=None)
        Most examples an update uses. When the batch-size schedule asks for
        ``B`` larger than this, the update uses ``max_batch_size`` examples
        and the learning rate ``lr * max_batch_size / B``. None: no
        maximum (an update never exceeds the training set).
    min_workers : int or None (default=None)
        Fewest workers the fit holds the cluster at; see ``max_workers``.
    max_workers : int or None (default=None)
        When it or ``min_workers`` is set, the fit holds the cluster behind
        the client (``client.cluster``: LocalCluster, dask-jobqueue,
        dask-kubernetes, anything with ``.scale``) at ``clip(ceil(B /
        grads_per_worker), min_workers, max_workers)`` workers for an
        update of ``B`` examples, asking without waiting, and gives it back
        at the size it found when the fit ends. None for both: the cluster
        is left alone.
"""

#: skorch's parameters as the Dask nets use them; ``{criterion}``,
#: ``{criterion_note}`` and ``{split}`` differ between classifier and regressor.
NET_PARAMETERS = """\
    module : torch.nn.Module class or instance
        The network. Its class must be importable on the workers, or be
        defined in ``__main__`` (pickled by value).
    criterion : torch criterion class (default={criterion})
        The loss, as in skorch{criterion_note}.
    optimizer : torch.optim.Optimizer class (default=torch.optim.SGD)
        Any torch optimizer; its state stays in this process.
    lr : float (default=0.01)
        The learning rate (scaled down past ``max_batch_size``).
    max_epochs : int (default=10)
        Passes over the training data.
    batch_size : int, schedule class or schedule (default=128)
        Examples per model update: an int (constant), -1 (the whole training
        set), or a schedule from :mod:`dask_adadamp.dampers` such as
        ``GeoDamp(initial=32, factor=2, delay=5)``.
    train_split : callable or None (default=skorch's {split})
        skorch's validation split; None for dask arrays and DataFrames
        (score held-out data with :meth:`score`).
{dask}    **kwargs
        skorch's other parameters (``callbacks``, ``device``, ``verbose``,
        ``warm_start``, ...) and routed ``module__*``, ``optimizer__*``,
        ``criterion__*`` and ``batch_size__*`` values.
"""


def fill(cls, criterion=None, criterion_note="", split=None):
    """Fill ``%(parameters)s`` (the Dask parameters) and
    ``%(net_parameters)s`` (all of them) in ``cls``'s docstring."""
    doc = cls.__doc__.replace("%(parameters)s", DASK_PARAMETERS)
    if criterion is not None:
        doc = doc.replace("%(net_parameters)s", NET_PARAMETERS.format(
            criterion=criterion, criterion_note=criterion_note, split=split,
            dask=DASK_PARAMETERS))
    cls.__doc__ = doc
