"""Data sets for demos, tests and benchmarks, made offline.

Examples
--------
>>> from dask_adadamp.datasets import digits
>>> X_train, X_test, y_train, y_test = digits()
>>> X_train.shape, X_train.dtype, y_train.dtype
((1437, 64), dtype('float32'), dtype('int64'))
"""
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def digits(test_size=0.2, random_state=0):
    """scikit-learn's bundled 8x8 digits, scaled to [0, 1].

    Returns
    -------
    X_train, X_test : numpy.ndarray of float32, shape (n, 64)
    y_train, y_test : numpy.ndarray of int64
    """
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype("float32")
    return train_test_split(X, y.astype("int64"), test_size=test_size,
                            random_state=random_state, stratify=y)


def mnist1d(random_state=0):
    """MNIST-1D (Greydanus 2020), generated procedurally: 4000 training and
    1000 test signals of length 40, ten classes. Needs the ``mnist1d``
    package (``pip install dask-adadamp[demo]``); nothing is downloaded.

    Returns
    -------
    X_train, X_test : numpy.ndarray of float32, shape (n, 40)
    y_train, y_test : numpy.ndarray of int64
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = random_state
    data = make_dataset(args)
    return (np.asarray(data["x"], "float32"), np.asarray(data["x_test"], "float32"),
            np.asarray(data["y"], "int64"), np.asarray(data["y_test"], "int64"))
