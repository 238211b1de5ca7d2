"""Dask DataFrames as X and y: trained where their partitions are."""
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
import torch
from dask.sizeof import sizeof
from distributed import Client

from dask_adadamp import DaskRegressor

from helpers import make_classifier, weights

FEATURES = [f"f{i}" for i in range(64)]


@pytest.fixture
def gathered(monkeypatch):
    """Everything the client receives as a result of a computation: every
    ``compute``, ``Future.result`` and ``gather`` ends in ``Client._gather``
    (the fit's own direct calls to the workers bring back gradient sums)."""
    received = []
    original = Client._gather

    async def recording(self, futures, *args, **kwargs):
        result = await original(self, futures, *args, **kwargs)
        received.append(result)
        return result

    monkeypatch.setattr(Client, "_gather", recording)
    return received


def test_parquet_frame_trains_on_the_workers_like_the_same_dask_array(
        client, digits_data, tmp_path, gathered):
    X, X_test, y, y_test = digits_data
    # float64 columns as pandas makes them, a label and a text column that
    # column selection leaves out; 4 files.
    frame = pd.DataFrame(X.astype("float64"), columns=FEATURES)
    frame["label"] = y
    frame["note"] = "x"
    dd.from_pandas(frame, npartitions=4).to_parquet(tmp_path / "digits")
    ddf = dd.read_parquet(tmp_path / "digits")
    # The blocks the selection computes to (dask may fuse small Parquet
    # partitions when it optimizes the graph).
    sizes = ddf[FEATURES].to_dask_array().compute_chunk_sizes().chunks[0]
    assert len(sizes) > 1
    gathered.clear()

    est = make_classifier(max_epochs=3).fit(ddf[FEATURES], ddf["label"])

    # The client received the classes, two rows to check the module with,
    # the partitions' lengths and a finiteness flag: no frame, no block.
    received = sum(sizeof(r) for r in gathered)
    assert received < 0.01 * X.nbytes, received
    assert not any(isinstance(part, (pd.DataFrame, pd.Series, pd.Index))
                   for r in gathered for part in r)
    assert list(est.classes_) == list(range(10))

    # The same bits as the same rows given as a dask array with the same
    # blocks (X float32, labels int64).
    same = make_classifier(max_epochs=3).fit(
        da.from_array(X, chunks=(sizes, 64)), da.from_array(y, chunks=sizes))
    assert torch.equal(weights(est), weights(same))
    assert est.history[-1, "model_updates"] == same.history[-1, "model_updates"]

    # Prediction and score take frames too, computed on the workers.
    test = pd.DataFrame(X_test.astype("float64"), columns=FEATURES)
    test["label"] = y_test
    test_ddf = dd.from_pandas(test, npartitions=3)
    gathered.clear()
    proba = est.predict_proba(test_ddf[FEATURES])
    assert isinstance(proba, da.Array)
    np.testing.assert_allclose(proba.compute(), est.predict_proba(X_test), rtol=1e-6)
    np.testing.assert_array_equal(est.predict(test_ddf[FEATURES]).compute(),
                                  est.predict(X_test))
    assert est.score(test_ddf[FEATURES], test_ddf["label"]) == pytest.approx(
        est.score(X_test, y_test))

    # The check above does see a frame pulled into the client.
    gathered.clear()
    ddf[FEATURES].compute()
    assert sum(sizeof(r) for r in gathered) >= X.nbytes


def test_frame_regression_and_r2_score(client):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.normal(size=(400, 3)), columns=list("abc"))
    frame["t"] = frame["a"] - 2 * frame["b"] + 0.5 * frame["c"]
    ddf = dd.from_pandas(frame, npartitions=4)
    est = DaskRegressor(torch.nn.Linear, module__in_features=3,
                        module__out_features=1, lr=0.1, batch_size=50,
                        grads_per_worker=25, max_epochs=10, train_split=None,
                        random_state=0, verbose=0)
    est.fit(ddf[["a", "b", "c"]], ddf[["t"]])
    X = frame[["a", "b", "c"]].to_numpy("float32", copy=True)  # writable, for torch
    y = frame[["t"]].to_numpy("float32", copy=True)
    assert est.score(X, y) > 0.99
    # R^2 summed on the cluster, from frames and from dask arrays alike.
    assert est.score(ddf[["a", "b", "c"]], ddf[["t"]]) == pytest.approx(
        est.score(X, y), abs=1e-5)
    assert est.score(da.from_array(X, chunks=150), da.from_array(y, chunks=100)) \
        == pytest.approx(est.score(X, y), abs=1e-5)
    assert est.predict(ddf[["a", "b", "c"]]).compute().shape == (400, 1)


@pytest.mark.parametrize("X_cols, y_col, message", [
    (["a", "s"], "label", "X's column 's' of dtype (string|str|object) is not accepted"),
    (["a", "when"], "label", "X's column 'when' of dtype datetime64.* is not accepted"),
    (["a"], "s", "y's column 's' of dtype (string|str|object) is not accepted"),
])
def test_non_numeric_columns_are_named(X_cols, y_col, message):
    frame = pd.DataFrame({"a": [1.0, 2.0], "s": ["x", "y"], "label": [0, 1],
                          "when": pd.to_datetime(["2026-01-01", "2026-01-02"])})
    ddf = dd.from_pandas(frame, npartitions=1)
    with pytest.raises(ValueError, match=message):
        make_classifier().fit(ddf[X_cols], ddf[y_col])
